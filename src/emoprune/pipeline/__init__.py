"""The DVC/MLflow side: params, the stage runner, tracking, atomic outputs, reports, sweeps.

The only room that knows about params.yaml, DVC and MLflow; the rooms below it take plain
arguments and can be tested without either.
"""
