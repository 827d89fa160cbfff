"""Training: the loop, cross-validation on the manifest's folds, checkpoints, the fold driver."""
