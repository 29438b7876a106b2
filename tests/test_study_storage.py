"""The Optuna study is safe on remote storage: copied consistently as the search goes, and a search
whose driver is lost continues on another machine (another HOME) with every finished trial kept.

Storage is a ``file://`` URI to a temp folder: the same pyarrow code path as s3:// or gs://, and
the driver-side files (the sqlite study among them) live in ``$HOME/.raylung/experiments``.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import SMOKE, epochs_reported_per_trial, smoke_overrides, start_raylung

from raylung.experiment import STUDY_FILE, Experiment


def _stored_rows(path: Path) -> int:
    """Rows of the test table in a stored copy, after sqlite's own integrity check."""
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return db.execute("SELECT count(*) FROM t").fetchone()[0]


@pytest.fixture
def remote(tmp_path, monkeypatch) -> Experiment:
    """An experiment on `file://` storage whose local files live under a HOME of its own."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    experiment = Experiment(f"file://{tmp_path / 'storage'}", "exp")
    experiment.local.mkdir(parents=True)
    return experiment


def test_save_study_copies_a_consistent_study_while_a_writer_holds_it(remote, tmp_path):
    local = remote.local / STUDY_FILE
    with sqlite3.connect(local) as db:
        db.execute("CREATE TABLE t (x BLOB)")
    stored = tmp_path / "storage" / "exp" / STUDY_FILE
    stop = threading.Event()

    def write() -> None:  # commits all along, as Optuna does while trials report
        with sqlite3.connect(local, timeout=30) as db:
            while not stop.is_set():
                db.execute("INSERT INTO t VALUES (randomblob(4096))")
                db.commit()
                stop.wait(0.002)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        seen = []
        for _ in range(8):
            assert remote.save_study()
            seen.append(_stored_rows(stored))
    finally:
        stop.set()
        writer.join()
    assert seen == sorted(seen) and seen[-1] > 0

    # A writer in the middle of a transaction: the copy has what was committed, and nothing waits.
    holder = sqlite3.connect(local)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (NULL)")
    committed = holder.execute("SELECT count(*) FROM t").fetchone()[0] - 1
    start = time.monotonic()
    assert remote.save_study()
    assert time.monotonic() - start < 10
    holder.rollback()
    holder.close()
    assert _stored_rows(stored) == committed
    assert not [p for p in stored.parent.iterdir() if p.name != STUDY_FILE]  # no temporary left


def test_save_study_that_cannot_write_warns_once_and_goes_on(remote, tmp_path, caplog):
    with sqlite3.connect(remote.local / STUDY_FILE) as db:
        db.execute("CREATE TABLE t (x)")
    (tmp_path / "storage").write_text("a file where the storage folder should be")
    with caplog.at_level(logging.WARNING, logger="raylung.experiment"):
        assert remote.save_study() is False
        assert remote.save_study() is False
    warnings = [r for r in caplog.records if "could not copy the Optuna study" in r.getMessage()]
    assert len(warnings) == 1 and "the search goes on" in warnings[0].getMessage()


def test_a_restored_searcher_opens_its_own_copy_and_fails_trials_tune_never_recorded(
    remote, tmp_path, monkeypatch
):
    import optuna
    from optuna.trial import TrialState

    from raylung.config.loading import load_config
    from raylung.tune.searcher import ResumableOptunaSearch

    first_home = os.environ["HOME"]
    space = load_config(SMOKE).space
    searcher = ResumableOptunaSearch(
        space, sampler="tpe", experiment=remote, seed=0, n_startup_trials=2, metric="val_loss", mode="min"
    )
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", {"val_loss": 0.5})
    state_file = tmp_path / "searcher-state.pkl"
    searcher.save(state_file)  # Tune's record: "a" done, "b" running
    searcher.suggest("c")  # the driver is lost before Tune records "c"
    tuner_pkl = pickle.dumps(searcher)
    assert first_home.encode() not in tuner_pkl and first_home.encode() not in state_file.read_bytes()

    # Another machine: its own HOME, the study fetched from storage, Tune's pickles restored.
    monkeypatch.setenv("HOME", str(tmp_path / "other-home"))
    remote.sync_down()
    restored = pickle.loads(tuner_pkl)
    restored.restore(str(state_file))
    assert restored._storage.url == f"sqlite:///{tmp_path / 'other-home'}/.raylung/experiments/exp/optuna.db"
    states = [t.state for t in restored._ot_study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL]
    restored.on_trial_complete("b", {"val_loss": 0.4})
    restored.suggest("d")
    monkeypatch.setenv("HOME", str(tmp_path / "third-home"))  # what storage holds now
    remote.sync_down()
    study = optuna.load_study(study_name="exp", storage=remote.optuna_url)
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.RUNNING,
    ]


def test_a_trial_finished_after_tunes_last_record_is_not_told_to_optuna_again(remote, tmp_path):
    """Tune saved its searcher while "a" ran; "a" then finished (the study saved it) and the
    driver was lost. Restored, Tune runs "a" on: its results must not reach the finished Optuna
    trial (``UpdateFinishedTrialError`` ended the resumed search), and Optuna keeps its value."""
    from optuna.trial import TrialState

    from raylung.config.loading import load_config
    from raylung.tune.searcher import ResumableOptunaSearch

    space = load_config(SMOKE).space
    searcher = ResumableOptunaSearch(
        space, sampler="tpe", experiment=remote, seed=0, n_startup_trials=2, metric="val_loss", mode="min"
    )
    searcher.suggest("a")
    searcher.on_trial_result("a", {"val_loss": 0.9, "training_iteration": 1})
    state_file = tmp_path / "searcher-state.pkl"
    searcher.save(state_file)  # Tune's record: "a" running
    tuner_pkl = pickle.dumps(searcher)
    searcher.on_trial_complete("a", {"val_loss": 0.5})  # the study's record: "a" COMPLETE

    restored = pickle.loads(tuner_pkl)
    restored.restore(str(state_file))
    restored.on_trial_result("a", {"val_loss": 0.4, "training_iteration": 2})  # raised before
    restored.on_trial_complete("a", {"val_loss": 0.4})
    (trial,) = restored._ot_study.get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE and trial.value == 0.5
    assert restored.suggest("b") is not None  # the search goes on


def _stored_study_states(experiment: Path, scratch: Path) -> list[str]:
    """The trial states of the study copy in storage (read from a copy, never in place)."""
    import optuna

    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / STUDY_FILE
    copy.write_bytes((experiment / STUDY_FILE).read_bytes())
    study = optuna.load_study(study_name=experiment.name, storage=f"sqlite:///{copy}")
    return [trial.state.name for trial in study.trials]


@pytest.mark.slow
def test_a_search_whose_driver_is_lost_continues_on_another_machine(ray_address, demo_root, tmp_path):
    """Kill `raylung tune` on URI storage after its first trial; resume under another HOME (nothing
    local survives): the stored study has the finished trial COMPLETE, and the resumed search
    finishes every trial once, the finished one never trained again."""
    import json

    storage = tmp_path / "storage"
    epochs = 2
    args = ["tune", str(SMOKE)]
    for item in smoke_overrides(
        storage,
        demo_root,
        f"experiment.storage=file://{storage}",
        "search.num_samples=2",
        "search.max_concurrent_trials=1",
        "search.asha.enabled=false",
        f"train.epochs={epochs}",
        "wandb.mode=disabled",
    ):
        args += ["--set", item]
    env = dict(os.environ, HOME=str(tmp_path / "first-machine"))
    proc = start_raylung(*args, env=env)
    deadline = time.monotonic() + 400
    experiment = None
    while time.monotonic() < deadline:
        found = list(storage.glob("smoke-*/trials"))
        if found:
            experiment = found[0].parent
            # The first trial finished and the second is part-way through.
            reports = epochs_reported_per_trial(experiment)
            if epochs in reports.values() and set(range(1, epochs)) & set(reports.values()):
                # Read now: the cluster's workers outlive the driver by a moment and may finish
                # the second trial's last epoch after the kill (its resume then restates it).
                finished = {
                    trial: (experiment / "trials" / trial / "checkpoint_manager_snapshot.json").read_bytes()
                    for trial, count in reports.items()
                    if count == epochs
                }
                break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    else:
        raise AssertionError("the tune never got one trial done")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)

    states = _stored_study_states(experiment, tmp_path / "scratch")
    assert states == ["COMPLETE", "RUNNING"], states
    assert len(finished) == 1

    resumed = subprocess.run(
        [sys.executable, "-m", "raylung", "tune", "--resume", f"file://{experiment}"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, HOME=str(tmp_path / "second-machine")),
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for trial, snapshot in finished.items():  # never trained again
        assert (experiment / "trials" / trial / "checkpoint_manager_snapshot.json").read_bytes() == snapshot
    assert list(epochs_reported_per_trial(experiment).values()) == [epochs, epochs]
    assert sorted(_stored_study_states(experiment, tmp_path / "scratch")) == ["COMPLETE", "COMPLETE"]
    results = json.loads((experiment / "results.json").read_text())
    assert len(results) == 2
    for result in results:  # every epoch exactly once
        assert [row["epoch"] for row in result["history"]] == list(range(1, epochs + 1))
