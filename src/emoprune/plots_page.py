"""An HTML template for `dvc plots show` that draws every plot with no network.

DVC's default page loads Vega, Vega-Lite and vega-embed from a CDN, so offline only the PNG
plots appear. This page carries the three libraries inline (from the npm packages `make plots`
installs under plots/node_modules), so `dvc_plots/index.html` draws anywhere it is opened.

    python -m emoprune.plots_page plots/node_modules plots/template.html
"""

from __future__ import annotations

import sys
from pathlib import Path

from emoprune.errors import UserError

# In load order: vega-embed needs the globals vega and vegaLite.
LIBRARIES = (
    "vega/build/vega.min.js",
    "vega-lite/build/vega-lite.min.js",
    "vega-embed/build/vega-embed.min.js",
)
# DVC fills {plot_divs} (required) and {refresh_tag}; {scripts}, the CDN tags, is left out.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>emoprune: dvc plots</title>
%s
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def build_template(node_modules: str | Path) -> str:
    """The page, with each library of ``LIBRARIES`` (read from ``node_modules``) inline."""
    scripts = []
    for rel in LIBRARIES:
        path = Path(node_modules) / rel
        try:
            code = path.read_text(encoding="utf-8")
        except OSError:
            raise UserError(f"{path}: missing; run `make plots` (npm ci --prefix plots)") from None
        # Inline code must neither close its <script> tag nor contain DVC's placeholders.
        if "</script" in code.lower() or "{plot_divs}" in code or "{refresh_tag}" in code:
            raise UserError(f"{path}: cannot be inlined (contains </script> or a placeholder)")
        scripts.append(f"    <script>/* {rel} */\n{code}\n    </script>")
    return PAGE % "\n".join(scripts)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m emoprune.plots_page NODE_MODULES TEMPLATE_HTML", file=sys.stderr)
        return 2
    try:
        page = build_template(args[0])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args[1])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # never a half-written template
    return 0


if __name__ == "__main__":
    sys.exit(main())
