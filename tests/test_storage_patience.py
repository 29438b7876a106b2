"""A storage write refused for a few seconds waits the outage out; one refused for good fails.

The outage is real: the folder is made unwritable (``chattr +i`` as root, where file modes do
not bind, else ``chmod a-w``) and a timer gives it back, as the chaos run does to a tune's
storage. The write under test is raylung's own atomic ``write_text``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from raylung.data.storage import write_text
from raylung.train import patience
from raylung.train.patience import patiently

ROOT = os.geteuid() == 0


def _lock(folder: Path, locked: bool) -> None:
    if ROOT:
        subprocess.run(["chattr", "+i" if locked else "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555 if locked else 0o755)


@pytest.fixture
def locked_folder(tmp_path):
    if ROOT and not shutil.which("chattr"):
        pytest.skip("running as root without chattr: cannot make a folder unwritable")
    folder = tmp_path / "storage"
    folder.mkdir()
    _lock(folder, True)
    try:
        write_text(folder / "probe", "x")
    except OSError:
        pass
    else:
        _lock(folder, False)
        pytest.skip("this filesystem ignores the lock: no outage to ride out")
    yield folder
    _lock(folder, False)


def test_a_write_refused_for_a_while_waits_for_storage_and_warns_once(locked_folder, caplog, monkeypatch):
    monkeypatch.setattr(patience, "_warned", False)
    threading.Timer(2.0, _lock, (locked_folder, False)).start()
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="raylung.train.patience"):
        patiently(lambda: write_text(locked_folder / "pipeline.json", "{}"), "pipeline.json", patience_s=60)
    assert (locked_folder / "pipeline.json").read_text() == "{}"
    assert time.monotonic() - start >= 1.5  # it did wait for the outage, it did not write through it
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "storage refused pipeline.json" in warnings[0]


def test_a_write_refused_past_its_patience_raises_the_storage_error(locked_folder, monkeypatch):
    monkeypatch.setattr(patience, "_warned", False)
    start = time.monotonic()
    with pytest.raises(OSError):
        patiently(lambda: write_text(locked_folder / "pipeline.json", "{}"), "pipeline.json", patience_s=2)
    assert time.monotonic() - start < 30
    assert not (locked_folder / "pipeline.json").exists()


@pytest.mark.slow
def test_a_train_run_whose_controller_starts_in_an_outage_starts_again_and_trains(
    ray_address, demo_root, locked_folder, tmp_path, caplog
):
    """Ray Train's controller writes a marker into the run's folder as it starts; the chaos run
    saw a trial error when that write fell inside a storage outage. Here the run's folder is
    unwritable when ``fit`` starts and is given back after 4 s: the run trains all the same."""
    from run_factory import tiny_config

    from raylung.train.launcher import STORAGE_PROBE_FILE, RunLocation, fit, prepare_splits

    cfg = prepare_splits(tiny_config(demo_root, tmp_path / "work", epochs=1), str(tmp_path / "split"))
    location = RunLocation(str(locked_folder.parent), locked_folder.name)
    threading.Timer(4.0, _lock, (locked_folder, False)).start()
    with caplog.at_level(logging.WARNING, logger="raylung.train.patience"):
        result = fit(cfg, location)
    assert result.error is None and result.metrics["epoch"] == 1
    assert result.checkpoint is not None and result.checkpoint.path.startswith(str(locked_folder))
    assert (locked_folder / STORAGE_PROBE_FILE).is_file()  # it waited for storage before starting again
    assert any("as its Train run started" in r.getMessage() for r in caplog.records)
