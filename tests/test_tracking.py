"""The tracking seam: what a run logs, read back from real W&B offline run files.

One `Tracker` for every command; per-epoch metrics reach the driver's hub from a Ray Train
report (the route a plain train and a tune trial share). Runs here are real W&B offline runs;
the hub is a real actor on the test's Ray cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from wandb_records import history_rows, read_records, run_config

from raylung.config import WandbConfig
from raylung.tracking import Tracker, epoch_metrics, init_kwargs, teardown


def _init(tmp_path: Path, name: str, mode: str = "offline", **extra) -> dict:
    return init_kwargs(
        WandbConfig(mode=mode), mode, tmp_path / "wandb", group="g", name=name, run_id=name, **extra
    )


def _run_file(tmp_path: Path, name: str) -> Path:
    (path,) = (tmp_path / "wandb").rglob(f"run-{name}.wandb")
    return path


def _summary(path: Path) -> dict:
    import json

    values = {}
    for record in read_records(path):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def _has_exit_record(path: Path) -> bool:
    return any(record.WhichOneof("record_type") == "exit" for record in read_records(path))


REPORT = {
    "epoch": 2,
    "val_loss": 0.5,
    "val_f1": 0.75,
    "world_size": 2,
    "stopped_early": 0,
    "checkpoint_path": "/somewhere/checkpoint_000001",  # Ray bookkeeping, not a metric
    "note": "text",
    "flag": True,
}


def test_epoch_metrics_keep_numbers_and_drop_bookkeeping():
    assert epoch_metrics(REPORT) == {
        "epoch": 2,
        "val_loss": 0.5,
        "val_f1": 0.75,
        "world_size": 2,
        "stopped_early": 0,
    }


def test_a_tracker_writes_epochs_at_their_step_a_table_images_and_a_summary(tmp_path):
    from raylung.plots import save_png

    image = tmp_path / "curve.png"
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    save_png(fig, image)
    tracker = Tracker.start(_init(tmp_path, "local", config={"lr": 1e-4}))
    assert tracker.active
    for epoch in (1, 2, 3):
        tracker.log_epoch({**REPORT, "epoch": epoch, "val_loss": 1.0 / epoch})
    tracker.log_table("trials", [{"trial": "a", "f1": 0.5}, {"trial": "b", "f1": None}])
    tracker.log_images({"curve": image})
    tracker.summary({"best_epoch": 3})
    folder = tracker.finish()
    teardown()  # finish() returns before W&B's service has written the file out

    path = _run_file(tmp_path, "local")
    assert folder == path.parent
    rows = [r for r in history_rows(path) if "val_loss" in r]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["_step"] for r in rows] == [1, 2, 3]  # step = epoch: a resumed run continues its curve
    assert rows[-1]["val_loss"] == pytest.approx(1 / 3)
    assert all("checkpoint_path" not in r and "note" not in r for r in rows)
    logged = {key: value for row in history_rows(path) for key, value in row.items()}
    assert logged["trials/_type"] == "table-file" and logged["trials/nrows"] == 2
    assert logged["curve/_type"] == "image-file" and logged["curve/width"] > 0
    assert run_config(path)["lr"] == pytest.approx(1e-4)
    assert _summary(path)["best_epoch"] == 3
    assert _has_exit_record(path)


def test_a_disabled_tracker_records_nothing_and_writes_no_files(tmp_path):
    tracker = Tracker.start(None)
    assert not tracker.active
    tracker.log_epoch(REPORT)
    tracker.log_table("t", [{"a": 1}])
    tracker.summary({"x": 1})
    assert tracker.finish() is None
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_the_hub_holds_concurrent_runs_fed_by_train_reports_and_drops_late_ones(ray_address, tmp_path):
    """Two runs open at once on the driver's hub; reports arrive through the Ray Train
    callback's hook; a report after a run finished is dropped, not an error."""
    from raylung.tracking.hub import EpochLogger, HubRun, tracker_hub

    with tracker_hub(True, name="raylung-test-hub") as hub:
        first = HubRun(hub, "first", _init(tmp_path, "first"))
        second = HubRun(hub, "second", _init(tmp_path, "second"))
        (logger,) = first.report_callbacks()
        assert isinstance(logger, EpochLogger)
        for epoch in (1, 2):
            logger.after_report(None, [{**REPORT, "epoch": epoch}, {"epoch": -1}], checkpoint=None)
            second.log_epoch({"epoch": epoch, "val_loss": 0.1 * epoch})
        first.summary({"best_epoch": 2})
        assert first.finish() == _run_file(tmp_path, "first").parent
        logger.after_report(None, [{**REPORT, "epoch": 3}], checkpoint=None)  # late: dropped
        # "second" is left open: closing the hub finishes it and flushes its files.
    first_rows = [r for r in history_rows(_run_file(tmp_path, "first")) if "val_loss" in r]
    assert [r["epoch"] for r in first_rows] == [1, 2]  # rank 0's metrics only, none after finish
    second_rows = [r for r in history_rows(_run_file(tmp_path, "second")) if "val_loss" in r]
    assert [r["val_loss"] for r in second_rows] == pytest.approx([0.1, 0.2])
    assert _summary(_run_file(tmp_path, "first"))["best_epoch"] == 2
    assert _has_exit_record(_run_file(tmp_path, "first")) and _has_exit_record(_run_file(tmp_path, "second"))


def test_without_wandb_the_hub_is_absent_and_runs_are_silent(tmp_path):
    from raylung.tracking.hub import HubRun, tracker_hub

    with tracker_hub(False) as hub:
        run = HubRun(hub, "x", None)
        assert hub is None and run.report_callbacks() == []
        run.log_epoch(REPORT)
        assert run.finish() is None
