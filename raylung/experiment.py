"""Where an experiment keeps its things, in one place so every command agrees.

::

    <storage>/<name>/
      raylung.yaml          the config or search space as given (with --set applied)
      space.json            the parsed search space
      splits.csv            the fixed split every trial and retrain uses
      optuna.db             the Optuna study (sqlite)
      tune/                 Ray Tune's experiment state (what `tune --resume` restores)
      trials/<trial_id>/    each trial's Ray Train run: checkpoints + snapshot, and pipeline.json
                            (what the trial trains, as built: augmentation, model fingerprint)
      wandb/                W&B run files (offline runs are synced from here)
      best.json, best/      the best trial's best epoch and its pipeline, and its export
      results.csv|md|json   the trials table
      plots/                learning curves, comparison charts
      raylung.log           raylung's and Ray's log lines (Ray's are kept off the console)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylung.errors import ConfigError
from raylung.storage import download_files, is_uri, join, upload_dir, upload_file_atomic

log = logging.getLogger(__name__)

STUDY_FILE = "optuna.db"

# Driver-side files: small, written by the process that runs the tune or the training. On
# URI storage they are written locally, then mirrored next to the trials' checkpoints.
DRIVER_FILES = (
    "raylung.yaml",
    "space.json",
    "base_config.json",
    "config.json",
    "pipeline.json",
    STUDY_FILE,
    "best.json",
    "results.json",
    "results.csv",
    "results.md",
    "raylung.log",  # raylung.cluster.run_log.RUN_LOG_FILE: a resumed search appends to it
)


@dataclass(frozen=True)
class Experiment:
    storage: str  # parent: a local path or a URI
    name: str

    @classmethod
    def new(cls, storage: str, name: str) -> Experiment:
        """A fresh, timestamped experiment name, so reruns never collide."""
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return cls(storage, f"{name}-{stamp}")

    @classmethod
    def at(cls, path: str | Path) -> Experiment:
        text = str(path).rstrip("/")
        if is_uri(text):
            parent, _, name = text.rpartition("/")
            return cls(parent, name)
        resolved = Path(text).expanduser().resolve()
        return cls(str(resolved.parent), resolved.name)

    @property
    def path(self) -> str:
        return join(self.storage, self.name)

    @property
    def local(self) -> Path:
        """The local directory (experiments on URIs keep their driver-side files here)."""
        if is_uri(self.storage):
            return Path.home() / ".raylung" / "experiments" / self.name
        return Path(self.path)

    def file(self, *parts: str) -> str:
        return join(self.path, *parts)

    @property
    def tune_dir(self) -> str:
        return self.file("tune")

    @property
    def trials_storage(self) -> str:
        return self.file("trials")

    @property
    def splits_file(self) -> str:
        return self.file("splits.csv")

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.local / STUDY_FILE}"

    @property
    def wandb_dir(self) -> Path:
        return self.local / "wandb"

    @property
    def best_json(self) -> Path:
        return self.local / "best.json"

    @property
    def best_export(self) -> Path:
        return self.local / "best" / "export"

    def sync_up(self) -> None:
        """Mirror the local driver-side files (and best export, plots, W&B files) to URI storage,
        so a driver on another machine can resume, report or retrain."""
        if is_uri(self.storage):
            upload_dir(self.local, self.path)

    def save_study(self) -> bool:
        """Copy the Optuna study to URI storage now; True when storage holds the current study.

        Called by the searcher after every suggestion and every finished trial, so a driver lost
        mid-search leaves a study in storage that a resume on another machine continues from
        (without it, storage held the study of the search's start). sqlite's backup API gives a
        consistent copy even while Optuna writes, and the upload replaces the stored copy
        atomically, so a driver killed mid-copy leaves the previous one. A failed copy is logged
        (once per experiment) and the search goes on: it must never cost the running trials.
        """
        source = self.local / STUDY_FILE
        if not is_uri(self.storage) or not source.is_file():
            return not is_uri(self.storage)  # local storage: the study is written in place
        try:
            with tempfile.TemporaryDirectory(dir=self.local, prefix=".study-") as scratch:
                snapshot = Path(scratch) / STUDY_FILE
                backup_sqlite(source, snapshot)
                upload_file_atomic(snapshot, self.file(STUDY_FILE))
        except Exception as exc:  # noqa: BLE001 - storage or sqlite: warn, never stop the search
            if self.path not in _unsaved_studies:
                _unsaved_studies.add(self.path)
                log.warning(
                    "could not copy the Optuna study to %s (%s: %s); the search goes on, and the "
                    "copy is retried after each trial",
                    self.file(STUDY_FILE),
                    type(exc).__name__,
                    exc,
                )
            return False
        return True

    def sync_down(self) -> None:
        """Fetch the driver-side files of an experiment on URI storage (not its checkpoints)."""
        if is_uri(self.storage) and not any((self.local / name).exists() for name in DRIVER_FILES):
            if not download_files(self.path, DRIVER_FILES, self.local):
                raise ConfigError(f"no raylung experiment found at {self.path}")

    def discard(self) -> None:
        """Remove everything of this experiment (local files and its storage folder): used when
        a start fails before any trial ran, so a failed start leaves nothing behind."""
        import shutil

        from raylung.storage import resolve_storage

        shutil.rmtree(self.local, ignore_errors=True)
        if is_uri(self.storage):
            filesystem, path = resolve_storage(self.path)
            try:
                filesystem.delete_dir(path)
            except OSError:
                pass  # never created

    @contextmanager
    def discarded_on_failure(self) -> Iterator[Experiment]:
        """Within the block, any exception discards the experiment before it propagates."""
        try:
            yield self
        except BaseException:
            self.discard()
            raise

    def read_best(self) -> dict[str, Any]:
        if not self.best_json.is_file():
            raise ConfigError(
                f"{self.best_json} not found: the experiment has no best trial yet "
                "(did `raylung tune` finish? resume it with `raylung tune --resume DIR`)"
            )
        return json.loads(self.best_json.read_text())


# Experiments whose failed study copy was already reported: one warning, not one per trial.
_unsaved_studies: set[str] = set()


def backup_sqlite(source: Path, destination: Path) -> None:
    """A consistent copy of a live sqlite database (the backup API: never a half-written page)."""
    reader = sqlite3.connect(source, timeout=30)
    writer = sqlite3.connect(destination)
    try:
        reader.backup(writer)
    finally:
        writer.close()
        reader.close()


def latest_experiment(storage: str | Path) -> Experiment:
    """The most recently modified experiment with a best.json under `storage`."""
    root = Path(storage).expanduser()
    candidates = [p.parent for p in root.glob("*/best.json")]
    if not candidates:
        raise ConfigError(
            f"no finished experiment under {root.resolve()}: run `raylung tune SPACE.yaml` "
            "first, or pass the experiment directory"
        )
    newest = max(candidates, key=lambda p: (p / "best.json").stat().st_mtime)
    return Experiment.at(newest)
