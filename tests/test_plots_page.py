"""The offline `dvc plots show` template: the three libraries inline, in order, DVC's
placeholders kept, the CDN's left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoprune.errors import UserError
from emoprune.plots_page import LIBRARIES, build_template, main


def fake_modules(root: Path, body=lambda rel: f"window['{rel}'] = 1;") -> Path:
    for rel in LIBRARIES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body(rel))
    return root


def test_template_inlines_the_libraries_in_load_order(tmp_path):
    page = build_template(fake_modules(tmp_path))
    positions = [page.index(f"window['{rel}'] = 1;") for rel in LIBRARIES]
    assert positions == sorted(positions)
    assert "{plot_divs}" in page and "{refresh_tag}" in page
    assert "{scripts}" not in page and "http" not in page  # nothing to fetch


def test_a_dvc_page_from_it_renders_the_plot_divs(tmp_path):
    from dvc_render.html import HTML

    html = HTML(build_template(fake_modules(tmp_path)))
    html.with_element("<div id='p'></div>")
    page = html.embed()
    assert "<div id='p'></div>" in page and "{plot_divs}" not in page


def test_missing_library_names_the_file_and_the_fix(tmp_path):
    fake_modules(tmp_path)
    (tmp_path / LIBRARIES[1]).unlink()
    with pytest.raises(UserError, match=r"vega-lite\.min\.js: missing; run `make plots`"):
        build_template(tmp_path)


def test_code_that_would_close_its_script_tag_is_refused(tmp_path):
    fake_modules(tmp_path, lambda rel: "x = '</script>';")
    with pytest.raises(UserError, match="cannot be inlined"):
        build_template(tmp_path)


def test_main_writes_the_template_or_one_line_and_nothing(tmp_path, capsys):
    out = tmp_path / "template.html"
    assert main([str(tmp_path / "none"), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and not out.exists()
    assert main([str(fake_modules(tmp_path / "nm")), str(out)]) == 0
    assert "{plot_divs}" in out.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["template.html"]
