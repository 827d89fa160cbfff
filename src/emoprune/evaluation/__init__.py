"""Evaluation: scores, statistics across folds, leakage checks, size/latency, report, figures."""
