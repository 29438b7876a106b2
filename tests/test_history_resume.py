"""Nothing lost under faults: one W&B history per run across crashes, and a resume that finishes.

The W&B files are real offline runs read back from disk; the interrupted run is a real
``raylung train`` whose driver is killed by its process group id in epoch 2, then resumed with
the CLI; the restored-as-RUNNING trial is a real Tune trial re-fitting a Train run whose
checkpoints already hold every epoch.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import start_raylung
from run_factory import write_tiny_yaml
from wandb_records import history_rows, read_records

from raylung.config import WandbConfig
from raylung.tracking import Tracker, init_kwargs, offline_run_dirs, teardown
from raylung.tracking.segments import SUPERSEDED, logged_epochs, payloads, run_folders, supersede


def _init(tmp_path: Path, run_id: str) -> dict:
    return init_kwargs(
        WandbConfig(mode="offline"), "offline", tmp_path, group="g", name=run_id, run_id=run_id
    )


def _epochs(rows: list[dict]) -> list[int]:
    return [int(row["epoch"]) for row in rows if "epoch" in row]


def _has_exit_record(folder: Path) -> bool:
    (path,) = folder.glob("*.wandb")
    return any(record.WhichOneof("record_type") == "exit" for record in read_records(path))


def _segment(tmp_path: Path, run_id: str, epochs: list[int], history=()) -> Path:
    tracker = Tracker.start(_init(tmp_path, run_id), history)
    for epoch in epochs:
        tracker.log_epoch({"epoch": epoch, "val_loss": 1.0 / epoch})
    folder = tracker.finish()
    teardown()  # finish() returns before W&B's service has written the file out
    return folder


# --- segments.py on real offline run files ----------------------------------------------------


def test_a_resumed_run_logs_its_kept_epochs_once_and_supersedes_the_earlier_folder(tmp_path):
    wandb_dir = tmp_path / "wandb"
    first = _segment(tmp_path, "r1", [1, 2])
    kept = [{"epoch": e, "val_loss": 1.0 / e, "checkpoint_path": "/x"} for e in (1, 2)]
    # The restarted run reports epoch 2 again (its checkpoint's) and goes on: no duplicate rows.
    second = _segment(tmp_path, "r1", [2, 3], history=kept)

    assert first != second
    assert run_folders(wandb_dir, "r1") == [second]  # the earlier one moved aside...
    moved = wandb_dir / SUPERSEDED / first.name
    assert logged_epochs(moved) == [1, 2]  # ...still readable
    assert logged_epochs(second) == [1, 2, 3] and _has_exit_record(second)
    assert offline_run_dirs(tmp_path) == [second]  # what raylung tells the user to sync


def test_a_folder_holding_epochs_the_last_one_lacks_is_never_hidden(tmp_path):
    first = _segment(tmp_path, "r2", [1, 2, 3])
    second = _segment(tmp_path, "r2", [1, 2])  # (no history given: it lacks epoch 3)
    assert run_folders(tmp_path / "wandb", "r2") == [first, second]
    assert supersede(second) == []
    assert not (tmp_path / "wandb" / SUPERSEDED).exists()


def test_a_torn_run_file_is_read_up_to_where_the_process_died(tmp_path):
    folder = _segment(tmp_path, "r3", [1, 2, 3])
    (path,) = folder.glob("*.wandb")
    whole = path.read_bytes()
    complete = len(list(payloads(path)))
    torn = tmp_path / "torn" / path.name
    torn.parent.mkdir()
    for cut in (len(whole) - 5, len(whole) // 2, 10):  # mid-chunk, mid-file, inside the first header
        torn.write_bytes(whole[:cut])
        records = list(payloads(torn))
        assert len(records) < complete
        assert logged_epochs(torn.parent) == [1, 2, 3][: len(logged_epochs(torn.parent))]


def test_an_open_run_is_on_disk_within_seconds(tmp_path):
    """wandb 0.31 writes its .wandb file every 15 s by default; raylung's runs every second,
    so a process killed now loses at most its last second of records."""
    tracker = Tracker.start(_init(tmp_path, "r4"))
    tracker.log_epoch({"epoch": 1, "val_loss": 0.5})
    (folder,) = run_folders(tmp_path / "wandb", "r4")
    deadline = time.monotonic() + 8
    while logged_epochs(folder) != [1] and time.monotonic() < deadline:
        time.sleep(0.25)
    assert logged_epochs(folder) == [1]
    tracker.finish()


# --- a real interrupted `raylung train`, resumed ------------------------------------------------


def _reports(run_dir: Path) -> int:
    try:
        snapshot = json.loads((run_dir / "run" / "checkpoint_manager_snapshot.json").read_text())
        return snapshot["current_report_index"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


EPOCHS = 4  # a tiny epoch takes about a second: room to be killed before the last one


@pytest.fixture(scope="module")
def resumed_run(ray_address, demo_root, tmp_path_factory) -> dict:
    """A `raylung train` (W&B offline) killed once it reported epoch 1, then `--resume`d."""
    tmp = tmp_path_factory.mktemp("interrupted")
    config = write_tiny_yaml(tmp / "tiny.yaml", demo_root, tmp, epochs=EPOCHS, workers=1)
    run_dir = tmp / "run"
    proc = start_raylung("train", str(config), "--output", str(run_dir), "--set", "wandb.mode=offline")
    deadline = time.monotonic() + 300
    while _reports(run_dir) < 1:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no epoch reported in 300 s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies, as on a lost terminal
    proc.wait(timeout=60)
    killed_at = _reports(run_dir)
    before = {
        folder.name: _epochs(history_rows(next(folder.glob("*.wandb")))) for folder in _folders(run_dir)
    }
    resumed = start_raylung("train", "--output", str(run_dir), "--resume")
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out
    return {"dir": run_dir, "killed_at": killed_at, "before": before, "out": out}


def _folders(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "wandb" / "wandb").glob("offline-run-*") if p.is_dir())


@pytest.mark.slow
def test_an_interrupted_then_resumed_train_leaves_one_complete_w_and_b_history(resumed_run):
    run_dir = resumed_run["dir"]
    assert resumed_run["killed_at"] < EPOCHS, resumed_run  # killed before the run was done
    assert "resumed from checkpoint after epoch" in resumed_run["out"]
    (kept,) = _folders(run_dir)  # one folder to sync...
    (run_file,) = kept.glob("*.wandb")
    assert _epochs(history_rows(run_file)) == list(range(1, EPOCHS + 1))  # ...every epoch once
    assert _has_exit_record(kept)
    superseded = sorted((run_dir / "wandb" / "wandb" / SUPERSEDED).iterdir())
    assert [folder.name for folder in superseded] == list(resumed_run["before"])
    for folder in superseded:  # the killed process's folder, moved aside, still readable
        assert set(logged_epochs(folder)) < set(range(1, EPOCHS + 1))
    print("\nbefore resume:", resumed_run["before"], "\nafter:", {kept.name: logged_epochs(kept)})


# --- B: a trial restored as RUNNING with nothing left to train ---------------------------------


@pytest.mark.slow
def test_a_restored_trial_with_nothing_left_to_train_restates_its_last_epoch(resumed_run, tmp_path):
    """Tune restores a trial that had finished as RUNNING: its Train run (every epoch already
    checkpointed) trains and reports nothing; the trial still completes with its val_loss."""
    from ray import tune

    from raylung.cluster.connect import TRIAL_DRIVER_RESOURCE
    from raylung.config import RaylungConfig
    from raylung.tune.reports import RESTATED
    from raylung.tune.results import summarize_trial

    run_dir = resumed_run["dir"]
    cfg = RaylungConfig.model_validate_json((run_dir / "config.json").read_text())
    cfg = cfg.model_copy(update={"wandb": cfg.wandb.model_copy(update={"mode": "disabled"})})
    storage = str(run_dir)

    def restored_trial(config: dict) -> None:  # nested: Ray pickles it by value
        from raylung.train.launcher import RunLocation, fit, latest_report
        from raylung.tune.reports import fit_reporting_to_tune

        location = RunLocation(storage, "run")
        fit_reporting_to_tune(
            lambda callbacks: fit(cfg, location, callbacks=callbacks), kept=latest_report(location)
        )

    trainable = tune.with_resources(restored_trial, {"CPU": 0, TRIAL_DRIVER_RESOURCE: 1})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(metric="val_loss", mode="min"),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="restored", verbose=0),
    )
    (result,) = tuner.fit()
    assert result.error is None, result.error
    assert result.metrics[RESTATED] == 1 and result.metrics["epoch"] == EPOCHS
    assert result.metrics["val_loss"] == pytest.approx(
        json.loads((run_dir / "metrics.json").read_text())["history"][-1]["val_loss"]
    )
    assert Path(result.metrics["checkpoint_path"]).is_dir()
    assert _reports(run_dir) == EPOCHS  # nothing trained again

    from raylung.config.search_space import SearchSpace

    summary = summarize_trial(result, SearchSpace(), "val_loss", "min", max_epochs=EPOCHS)
    assert summary.history == [] and summary.reported_epochs == []  # a restatement is no epoch
