"""`make bench`: run every benchmark module, write reports/bench.md and reports/bench.json.

Each module's ``run(smoke)`` returns rows {group, name, value, unit, baseline, ratio, note}; a
ratio compares two measurements taken in the same process, so a noisy machine still gives a
meaningful number. ``--smoke`` runs a seconds-long version with no thresholds (CI uses it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

MODULES = ("bench_features", "bench_training", "bench_pruning")
# Runs the whole DAG (the full-size sample takes long on a laptop): `make bench` only.
SLOW = ("bench_pipeline",)


def table(rows: list[dict]) -> str:
    lines = ["| group | benchmark | value | unit | baseline | ratio | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = "" if r.get("baseline") is None else f"{r['baseline']:.4g}"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}x"
        lines.append(f"| {r['group']} | {r['name']} | {r['value']:.4g} | {r['unit']} | {base} "
                     f"| {ratio} | {r.get('note', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run, no thresholds")
    parser.add_argument("--only", nargs="*", default=None, help="modules to run")
    parser.add_argument("--out", default="reports", help="folder for bench.md / bench.json")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    for name in args.only or (MODULES if args.smoke else MODULES + SLOW):
        start = time.perf_counter()
        print(f"== {name}", file=sys.stderr)
        rows += importlib.import_module(f"benchmarks.{name}").run(smoke=args.smoke)
        print(f"   {time.perf_counter() - start:.1f} s", file=sys.stderr)
    machine = {"python": platform.python_version(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
               "cuda": torch.cuda.is_available(), "smoke": args.smoke}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    md = f"# emoprune benchmarks\n\n{json.dumps(machine)}\n\n{table(rows)}\n"
    (out / "bench.md").write_text(md)
    print(table(rows))
    print(f"\nwrote {out / 'bench.md'} and {out / 'bench.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
