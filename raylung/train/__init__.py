"""Ray Train: the launcher (a ``TorchTrainer`` over the configured workers), the worker loop
(config in, metrics and checkpoints out) and its progress display; the run's parts
(``parts.build_run``) and epoch loop (``epochs.run_epochs``) also run without Ray, timed
through ``hooks``."""
