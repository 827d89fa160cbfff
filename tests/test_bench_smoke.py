"""The benchmarks must keep running (CI runs their smoke version; no thresholds here)."""

import importlib

import pytest

from benchmarks.__main__ import MODULES


@pytest.mark.parametrize("name", MODULES)
def test_smoke_rows_are_complete(name):
    rows = importlib.import_module(f"benchmarks.{name}").run(smoke=True)
    assert rows
    for row in rows:
        assert {"group", "name", "value", "unit", "baseline", "ratio", "note"} <= set(row)
        assert row["value"] == row["value"] and row["value"] >= 0  # a number, not NaN
        if row["ratio"] is not None:
            assert row["baseline"] is not None and row["ratio"] > 0
