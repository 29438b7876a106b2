"""Live progress of a training run, from rank 0 on any node to the user's terminal.

The training loop runs in Ray workers, possibly on other machines, so progress travels
through a Ray queue actor (zero CPUs): rank 0 posts a small update at most a few times a
second, and the driver renders it (:func:`raylung.progress.progress_bar`, on stderr) while
``TorchTrainer.fit`` runs.
"""

from __future__ import annotations

import queue as std_queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from raylung.progress import progress_bar


@dataclass
class StepUpdate:
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    images_per_s: float


class StepReporter:
    """Worker side: rate-limited, fire-and-forget posts; a full or dead queue never blocks training."""

    def __init__(self, queue: Any | None, interval_s: float = 0.5) -> None:
        self.queue = queue
        self.interval_s = interval_s
        self._last = 0.0

    def step(self, update: StepUpdate, force: bool = False) -> None:
        now = time.monotonic()
        if self.queue is None or (not force and now - self._last < self.interval_s):
            return
        self._last = now
        try:
            self.queue.put_nowait(("step", update))
        except Exception:  # noqa: BLE001 - progress is best effort by design
            pass

    def epoch_end(self, metrics: dict[str, float]) -> None:
        if self.queue is None:
            return
        try:
            self.queue.put_nowait(("epoch", metrics))
        except Exception:  # noqa: BLE001
            pass


class ProgressDisplay:
    """Driver side: drain the queue in a thread and draw epoch and step bars; each epoch's
    validation metrics are printed as a line above them (also where no bar is drawn)."""

    def __init__(self, queue: Any, console: Console | None = None) -> None:
        self.queue = queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.progress = progress_bar(
            columns=(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
            ),
            console=console,
        )
        self.console = self.progress.console
        self._epoch_task = None
        self._step_task = None

    def __enter__(self) -> ProgressDisplay:
        self.progress.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._step_task is not None and self.progress.summarize:
            self.progress.remove_task(self._step_task)  # its clock runs over all epochs: no summary
        self.progress.__exit__(*exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items = self.queue.get_nowait_batch(self.queue.qsize()) if self.queue.qsize() else []
            except (std_queue.Empty, Exception):  # noqa: BLE001 - the actor may be gone at shutdown
                items = []
            for kind, payload in items:
                self._show(kind, payload)
            self._stop.wait(0.25)

    def _show(self, kind: str, payload: Any) -> None:
        if kind == "step":
            update: StepUpdate = payload
            if self._epoch_task is None:
                self._epoch_task = self.progress.add_task("epochs", total=update.epochs, info="")
                self._step_task = self.progress.add_task("steps", total=update.steps, info="")
            self.progress.update(self._epoch_task, completed=update.epoch - 1)
            self.progress.update(
                self._step_task,
                completed=update.step,
                total=update.steps,
                description=f"epoch {update.epoch}",
                info=f"loss {update.loss:.4f}  {update.images_per_s:.1f} img/s",
            )
        elif kind == "epoch":
            metrics: dict[str, float] = payload
            if self._epoch_task is not None:
                self.progress.update(self._epoch_task, completed=int(metrics["epoch"]))
            shown = "  ".join(
                f"{k.removeprefix('val_')} {metrics[k]:.4f}"
                for k in ("val_loss", "val_accuracy", "val_f1", "val_auroc")
                if k in metrics
            )
            self.progress.console.print(
                f"epoch {int(metrics['epoch'])}: train_loss {metrics['train_loss']:.4f}  val: {shown}"
            )
