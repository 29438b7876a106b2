"""Ray Train: the launcher (a ``TorchTrainer`` over the configured workers), the worker loop
(config in, metrics and checkpoints out) and its progress display."""
