"""check_params: validate the whole params.yaml before any stage's outputs can be touched.

DVC deletes a stage's outputs before running it, so a bad value must stop the pipeline before
that. This stage runs first, imports no torch or MLflow, and writes one file per section
(outputs/params/<section>.json, cached DVC outs that persist), each rewritten only when its
section changes: a stage that depends on its own sections' files reruns exactly when they change.
"""

import sys

from emoprune.errors import UserError
from emoprune.pipeline.outputs import json_text, write_json
from emoprune.pipeline.params import SECTIONS, check_data_folder, load_params, section_file


def main() -> int:
    try:
        p = load_params()
        check_data_folder(p.data.raw)
    except UserError as exc:
        print(f"error: [check_params] {exc}", file=sys.stderr)
        return exc.exit_code
    for name in SECTIONS:
        path, value = section_file(name), p.section(name)
        if not path.is_file() or path.read_text() != json_text(value):
            write_json(path, value)
    print(f"[check_params] params.yaml is valid -> {section_file('*')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
