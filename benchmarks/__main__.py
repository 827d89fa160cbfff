"""`make bench`: run every benchmark module, write reports/bench.md and reports/bench.json.

Each module's ``run(smoke)`` returns rows {group, name, value, unit, baseline, ratio, note}; a
ratio compares two measurements taken in the same process, so a noisy machine still gives a
meaningful number. ``--smoke`` runs a seconds-long version with no thresholds (CI uses it).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import re
import sys
import time
from pathlib import Path

import torch

from emoprune.pipeline.stage import reuse_freed_memory

MODULES = ("bench_features", "bench_training", "bench_pruning", "bench_tracking")
# The targets: (row name pattern, field compared, operator, bound). A smoke run checks none.
TARGETS = (
    (r"(lpq|phog)_\d+x\d+_fast", "ratio", ">=", 3.0),
    (r"fit_images_per_s", "ratio", ">=", 0.9),
    (r"distinctiveness_check_.*", "ratio", ">=", 100.0),
    (r"check_vs_training_epoch", "ratio", "<", 0.02),
    (r"(cnn|resnet18)_train(_bf16)?_gflops", "ratio", ">=", 0.5),
    (r"bf16_vs_fp32_.*", "value", "<", 1.0),
    (r"frozen_resnet18_cached_epoch_s", "ratio", ">=", 20.0),
    (r"frozen_resnet18_head_max_abs_diff", "value", "<", 1e-4),
    (r"dvc_repro_default_sample", "value", "<", 120.0),
    (r"dvc_repro_full_size_675", "value", "<", 540.0),
    (r"exp_run_threshold_15_full_size_675", "ratio", "<", 0.2),
    (r"peak_rss", "value", "<", 3072.0),
    (r"make_test", "value", "<", 600.0),
    (r"fp32_speedup_vs_\w+_full_size_675", "ratio", ">=", 1.8),
)
# The whole DAG (the full-size sample takes long on a laptop) and the whole test suite:
# `make bench` only.
SLOW = ("bench_pipeline", "bench_suite")


def cpu_info() -> dict[str, str]:
    """The CPU model and the flags that decide the speed figures (lscpu prints the same)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": platform.processor() or platform.machine()}
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    wanted = re.compile(r"avx2|fma|avx512(f|_bf16|_fp16|_vnni)|amx_\w+")
    return {
        "cpu_model": model.group(1).strip() if model else platform.machine(),
        "cpu_flags": " ".join(
            f for f in (flags.group(1).split() if flags else []) if wanted.fullmatch(f)
        ),
    }


def check_targets(rows: list[dict]) -> None:
    """Add ``target`` ("ratio >= 3") and ``met`` (bool) to the rows that have a target."""
    for row in rows:
        for pattern, field, op, bound in TARGETS:
            if re.fullmatch(pattern, row["name"]) and row.get(field) is not None:
                value = row[field]
                row["target"] = f"{field} {op} {bound:g}"
                row["met"] = bool(value >= bound if op == ">=" else value < bound)


def summary(rows: list[dict]) -> str:
    """One screen: a line per benchmark, the figure that counts and its target."""
    lines = [f"{'benchmark':<38} {'value':>18} {'ratio':>9}  {'target':<16} met", "-" * 88]
    for r in rows:
        value = f"{r['value']:.4g} {r['unit']}"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.3g}x"
        met = "" if "met" not in r else ("met" if r["met"] else "NOT met")
        lines.append(
            f"{r['name'][:38]:<38} {value:>18} {ratio:>9}  {r.get('target', ''):<16} {met}"
        )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = [
        "| group | benchmark | value | unit | baseline | ratio | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = "" if r.get("baseline") is None else f"{r['baseline']:.4g}"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}x"
        lines.append(
            f"| {r['group']} | {r['name']} | {r['value']:.4g} | {r['unit']} | {base} "
            f"| {ratio} | {r.get('note', '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run, no thresholds")
    parser.add_argument("--only", nargs="*", default=None, help="modules to run")
    parser.add_argument("--out", default="reports", help="folder for bench.md / bench.json")
    parser.add_argument(
        "--device", default="cpu", help="where the training benchmarks run: cpu (default) or cuda"
    )
    parser.add_argument(
        "--e2e",
        nargs="*",
        default=["default", "full"],
        choices=["default", "full"],
        help="end-to-end samples: default (the bundled 405 frames), full (675)",
    )
    args = parser.parse_args(argv)
    # The training rows' steps allocate as the stages' do (pipeline.stage.reuse_freed_memory).
    reuses_freed = reuse_freed_memory()
    machine = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **cpu_info(),
        "cuda": torch.cuda.is_available(),
        "device": args.device,
        "smoke": args.smoke,
        "malloc_reuses_freed_memory": reuses_freed,
    }
    out = Path(args.out)
    rows: list[dict] = []
    for name in args.only or (MODULES if args.smoke else MODULES + SLOW):
        start = time.perf_counter()
        print(f"== {name}", file=sys.stderr)
        module = importlib.import_module(f"benchmarks.{name}")
        accepted = inspect.signature(module.run).parameters
        kwargs = {
            k: v for k, v in (("device", args.device), ("e2e", tuple(args.e2e))) if k in accepted
        }
        rows += module.run(smoke=args.smoke, **kwargs)
        print(f"   {time.perf_counter() - start:.1f} s", file=sys.stderr)
        # After every module: an hours-long run that fails later keeps what it measured.
        write_reports(out, machine, rows, targets=not args.smoke)
    print(summary(rows))
    print(f"\nwrote {out / 'bench.md'} and {out / 'bench.json'}", file=sys.stderr)
    return 0


def write_reports(out: Path, machine: dict, rows: list[dict], targets: bool) -> None:
    """bench.json (the rows, machine-readable) and bench.md (the summary, then every row)."""
    if targets:
        check_targets(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    md = (
        f"# emoprune benchmarks\n\n{json.dumps(machine)}\n\n## Summary\n\n```\n{summary(rows)}\n"
        f"```\n\n## Every row\n\n{table(rows)}\n"
    )
    (out / "bench.md").write_text(md)


if __name__ == "__main__":
    sys.exit(main())
