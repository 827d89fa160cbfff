"""The ``emoprune`` console script: one subcommand per task (``predict``, ``sweep``, ``ui``).

A user mistake (bad option, missing model, corrupt checkpoint) is one ``error: ...`` line on
stderr and exit 2, never a traceback; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from emoprune.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is a UserError (one line) instead of usage + exit."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _int_in(what: str, low: int, high: int | None, out_of_range: str):
    """An argparse type: an integer in [low, high]; each mistake is a one-line message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(out_of_range.format(value))
        return value

    return parse


_positive = _int_in("a positive integer", 1, None, "expected a positive integer, got {}")
_fold = _int_in("a fold number", 0, None, "folds are numbered from 0, got {}")
_port = _int_in("a port number", 1, 65535, "expected a port in 1-65535, got {}")


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    from emoprune.predict import MODELS

    p = subparsers.add_parser(
        "predict",
        help="print the emotion of each image",
        description="Print 'IMAGE<TAB>emotion<TAB>probability' per image (PNG/JPEG, any size), "
        "using a model trained by `dvc repro`. Run it from the project root.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument(
        "--model", choices=MODELS, default=None, help="which trained model (default: cnn)"
    )
    p.add_argument(
        "--fold",
        type=_fold,
        default=None,
        metavar="K",
        help="which cross-validation fold's model (default: 0)",
    )
    p.add_argument(
        "--uri",
        metavar="MLFLOW_MODEL_URI",
        help="instead of --model/--fold: a model the pipeline logged to MLflow, of any kind "
        "(runs:/<run_id>/model_fold0, models:/emoprune-cnn@workspace, models:/NAME@latest "
        "for the newest version); it carries its own preprocessing and class names",
    )
    p.add_argument(
        "--top",
        type=_positive,
        default=1,
        metavar="K",
        help="also print the K most probable emotions as a 4th field",
    )
    p.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from emoprune.predict import load_predictor, predict_files

    predictor = load_predictor(args.model, args.fold, args.uri)
    failed = predict_files(predictor, args.images, sys.stdout, sys.stderr, top=args.top)
    return 2 if failed else 0


def _add_sweep(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run one DVC experiment per pruning threshold, in parallel",
        description="Queue `dvc exp run -S prune.threshold=T` for each T, run them with "
        "`dvc queue start -j JOBS`, wait, and print one row per threshold. The "
        "experiments' MLflow runs nest under one sweep run. Run it from the "
        "project root, after `dvc repro` (only check_params, prune_cnn and evaluate rerun).",
    )
    p.add_argument(
        "--thresholds",
        default="15,20,25",
        metavar="T1,T2,...",
        help="comma-separated angles in degrees (default: 15,20,25)",
    )
    p.add_argument("--jobs", type=_positive, default=2, help="parallel workers (default: 2)")
    p.set_defaults(run=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    from emoprune.pipeline import sweep
    from emoprune.pipeline.params import load_params
    from emoprune.pipeline.process import interrupts_outside_store

    thresholds = sweep.parse_thresholds(args.thresholds)
    with interrupts_outside_store():  # the sweep run is marked KILLED, never a locked store
        results = sweep.run_sweep(thresholds, args.jobs, load_params().mlflow.experiment)
    print(sweep.summary_table(results), end="")
    failed = sweep.failed(results)
    for name in failed:
        print(f"error: experiment {name} failed; see `dvc queue logs {name}`", file=sys.stderr)
    return 1 if failed else 0


def _add_ui(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ui",
        help="the MLflow UI over the project's store (what `make ui` runs)",
        description="Print the link to the experiment's training runs and serve the MLflow UI "
        "over the project's mlflow.db and mlartifacts/ (a copied or moved project's store is "
        "first pointed at this folder). Run it from the project root.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=5000, help="port (default: 5000)")
    p.set_defaults(run=_run_ui)


def _run_ui(args: argparse.Namespace) -> int:
    from emoprune.pipeline.ui import serve

    serve(args.host, args.port)
    return 0  # not reached: serve becomes the server


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="emoprune", description="Distinctiveness pruning on SFEW: tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_predict(subparsers)
    _add_sweep(subparsers)
    _add_ui(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``emoprune COMMAND ...``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `emoprune predict ... | head`: the reader left; exit quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
