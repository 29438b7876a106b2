"""Hyperparameter search: Ray Tune trials, each a Ray Train run, sampled by Optuna, pruned by ASHA."""
