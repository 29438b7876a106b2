"""A real smoke tune on the session's Ray cluster: Optuna + ASHA, W&B offline files, best export,
resume after the driver is killed, and `train --best`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SMOKE, epochs_reported_per_trial, smoke_overrides, start_raylung
from wandb_records import history_rows, run_config

from raylung.experiment import Experiment
from raylung.tracking.segments import SUPERSEDED, run_folders

pytestmark = pytest.mark.slow


def test_smoke_tune_runs_every_trial_and_asha_prunes(smoke):
    assert len(smoke.trials) == 4
    assert len({json.dumps(t.params, sort_keys=True) for t in smoke.trials}) == 4
    assert all(t.history and t.status != "error" for t in smoke.trials), smoke.trials
    assert any(t.status == "pruned" for t in smoke.trials), [t.status for t in smoke.trials]
    for trial in smoke.trials:
        assert [row["epoch"] for row in trial.history] == list(range(1, trial.epochs + 1))
        assert set(trial.reported_epochs) <= {row["epoch"] for row in trial.history}
    table = (smoke.experiment.local / "results.csv").read_text().splitlines()
    assert len(table) == 5 and "status" in table[0]


def test_every_trial_has_a_wandb_offline_run_with_one_row_per_epoch(smoke):
    files = {
        p.name.removeprefix("run-").removesuffix(".wandb"): p
        for p in smoke.experiment.wandb_dir.rglob("run-*.wandb")
    }
    for trial in smoke.trials:
        assert trial.trial_id in files, sorted(files)
        rows = [r for r in history_rows(files[trial.trial_id]) if "val_loss" in r]
        logged = [r["epoch"] for r in rows]
        # Every epoch Tune received was logged first, once, in order; an epoch trained after
        # ASHA stopped the trial (its report dropped) may be logged too, never one not trained.
        assert logged == list(range(1, len(logged) + 1)), logged
        assert set(trial.reported_epochs) <= set(logged) <= {row["epoch"] for row in trial.history}
        by_epoch = {row["epoch"]: row for row in trial.history}
        for logged in rows:
            for key in ("val_loss", "val_accuracy", "val_f1", "val_auroc", "train_loss"):
                assert logged[key] == pytest.approx(by_epoch[logged["epoch"]][key]), key
        config = run_config(files[trial.trial_id])
        for path, value in trial.params.items():
            assert config[path] in (value, json.dumps(value)), path
    summaries = [p for p in files if p not in {t.trial_id for t in smoke.trials}]
    assert len(summaries) == 1  # the sweep's summary run


def test_best_json_names_a_stored_checkpoint_of_the_best_epoch(smoke):
    best = json.loads(smoke.experiment.best_json.read_text())
    values = [t.best_value for t in smoke.trials if t.best_value is not None]
    assert best["metric"] == "val_loss" and best["value"] == min(values)
    winner = next(t for t in smoke.trials if t.trial_id == best["trial_id"])
    assert best["epoch"] == winner.best_epoch
    checkpoint = Path(best["checkpoint"])
    assert (checkpoint / "model.safetensors").is_file()
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["epoch"] == best["epoch"]
    assert state["history"][-1]["val_loss"] == pytest.approx(best["value"])

    from raylung.artifacts.loader import load_export

    loaded = load_export(best["export"])
    assert loaded.config.model.name == "resnet_ours_tiny"


def test_each_trial_records_the_pipeline_it_trained_everywhere_its_config_is(smoke):
    """trial folder, results.json, the trial's W&B run config, best.json: one pipeline each."""
    from raylung.config.loading import trial_config
    from raylung.plan.effective import effective_pipeline
    from raylung.tune.tuner import reload

    prepared = reload(smoke.experiment)
    files = {
        p.name.removeprefix("run-").removesuffix(".wandb"): p
        for p in smoke.experiment.wandb_dir.rglob("run-*.wandb")
    }
    saved = {
        row["trial_id"]: row for row in json.loads((smoke.experiment.local / "results.json").read_text())
    }
    for trial in smoke.trials:
        written = json.loads(
            (smoke.experiment.local / "trials" / trial.trial_id / "pipeline.json").read_text()
        )
        resolved = effective_pipeline(trial_config(prepared.base, prepared.space, trial.params)).to_json()
        assert written == resolved == trial.pipeline == saved[trial.trial_id]["pipeline"]
        policy = trial.params["data.augment.policy"]
        if policy != "custom":  # the policy's documented transforms, none dropped
            from raylung.data.policies import POLICIES

            assert written["augment"] == {k: v for k, v in POLICIES[policy].items() if v > 0}
        logged = run_config(files[trial.trial_id])["effective"]
        assert logged["model"]["fingerprint"] == written["model"]["fingerprint"]
        assert logged["augment"] == written["augment"] and logged["digest"] == written["digest"]
    best = json.loads(smoke.experiment.best_json.read_text())
    winner = next(t for t in smoke.trials if t.trial_id == best["trial_id"])
    assert best["pipeline"] == winner.pipeline


def test_dry_run_lists_the_trials_the_tune_started(smoke, demo_root):
    """The start-up trials TPE drew in the real tune (its own Optuna study, in ask order) are the
    dry run's, value for value, and each ran as a Tune trial with the dry run's pipeline."""
    import optuna

    from raylung.config.loading import load_config
    from raylung.plan.dry_run import plan_trials

    loaded = load_config(SMOKE, smoke_overrides(Path("/unused"), demo_root, "search.num_samples=4"))
    planned = plan_trials(loaded)
    startup = loaded.config.search.n_startup_trials
    study = optuna.load_study(study_name=smoke.experiment.name, storage=smoke.experiment.optuna_url)
    asked = sorted(study.trials, key=lambda t: t.number)
    assert [loaded.space.decode(t.params) for t in asked[:startup]] == [p.params for p in planned[:startup]]
    ran = {json.dumps(t.params, sort_keys=True): t.pipeline["digest"] for t in smoke.trials}
    for plan in planned[:startup]:
        assert ran[json.dumps(plan.params, sort_keys=True)] == plan.pipeline.digest


def test_train_best_refuses_a_config_that_no_longer_builds_the_best_pipeline(smoke, tmp_path):
    """An edited base config (here the old defect: a strength forced to 0.0) is caught before any
    training, naming what differs."""
    import shutil

    from raylung.errors import ConfigError
    from raylung.workflows.retrain import retrain_best

    copy = tmp_path / smoke.experiment.name
    shutil.copytree(
        smoke.experiment.local, copy, ignore=shutil.ignore_patterns("trials", "wandb", "retrain-*")
    )
    best = json.loads((copy / "best.json").read_text())
    space = json.loads((copy / "space.json").read_text())
    searched = {row["path"].rsplit(".", 1)[-1] for row in space}
    trained = [name for name in best["pipeline"]["augment"] if name not in searched]
    # turn off a transform the best trial trained, or (none) force one on
    field, value = (trained[0], 0.0) if trained else ("hflip", 1.0)
    base = json.loads((copy / "base_config.json").read_text())
    base["data"]["augment"][field] = value
    (copy / "base_config.json").write_text(json.dumps(base))
    with pytest.raises(ConfigError, match=f"augment.{field}"):
        retrain_best(str(copy), storage="unused", progress=False)
    assert not list(copy.glob("retrain-*"))


def test_train_best_retrains_evaluates_on_test_and_exports(smoke):
    from raylung.workflows.retrain import retrain_best

    outcome = retrain_best(str(smoke.experiment.local), storage="unused", progress=False)
    assert [row["epoch"] for row in outcome.history][-1] <= 4
    assert (outcome.export / "model.safetensors").is_file()
    assert outcome.evaluation is not None and outcome.evaluation.split == "test"
    assert 0.5 <= outcome.evaluation.metrics["auroc"] <= 1.0
    assert (outcome.directory / "test" / "metrics.json").is_file()
    # The export carries a temperature fitted on validation and an operating point, and its card
    # states them with the test evaluation it was regenerated from.
    manifest = json.loads((outcome.export / "manifest.json").read_text())
    assert (
        manifest["calibration"]["method"] == "temperature"
        and manifest["calibration"]["fitted_on"] == "validation"
    )
    assert manifest["calibration"]["temperature"] > 0 and manifest["operating_point"]["rule"] == "fixed"
    card = (outcome.export / "MODEL_CARD.md").read_text()
    recorded = json.loads((outcome.export / "evaluation_test.json").read_text())
    assert recorded["n"] == outcome.evaluation.n and "## Test results" in card
    assert f"| accuracy | {recorded['metrics']['accuracy']:.4f} |" in card
    assert f"T = {manifest['calibration']['temperature']:.4f}" in card
    assert (outcome.directory / "test" / "reliability.png").is_file()


def test_train_best_full_folds_validation_into_training(smoke):
    from raylung.data import SplitSet
    from raylung.workflows.retrain import retrain_best

    best = json.loads(smoke.experiment.best_json.read_text())
    outcome = retrain_best(str(smoke.experiment.local), storage="unused", full=True, progress=False)
    assert [row["epoch"] for row in outcome.history] == list(range(1, best["epoch"] + 1))
    full = SplitSet.load(outcome.config.data.splits_file)
    original = SplitSet.load(smoke.experiment.splits_file)
    assert len(full["train"]) == len(original["train"]) + len(original["validation"])
    assert {s.path for s in full["test"]} == {s.path for s in original["test"]}
    assert outcome.evaluation.split == "test"


def test_resume_after_the_driver_is_killed_keeps_finished_trials(ray_address, demo_root, tmp_path):
    storage = tmp_path / "exp"
    args = ["tune", str(SMOKE)]
    for item in smoke_overrides(
        storage,
        demo_root,
        "search.num_samples=3",
        "search.max_concurrent_trials=1",
        "search.asha.enabled=false",
        "train.epochs=3",
    ):
        args += ["--set", item]
    proc = start_raylung(*args)
    deadline = time.monotonic() + 400
    experiment = None
    while time.monotonic() < deadline:
        found = list(storage.glob("smoke-*/tune"))
        if found:
            experiment = found[0].parent
            # One trial finished (3 epochs) and the next one is part-way through.
            reports = epochs_reported_per_trial(experiment)
            if 3 in reports.values() and ({1, 2} & set(reports.values())):
                break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    else:
        raise AssertionError("the tune never got one trial done")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    reports = epochs_reported_per_trial(experiment)
    finished = {
        trial: (experiment / "trials" / trial / "checkpoint_manager_snapshot.json").read_bytes()
        for trial, count in reports.items()
        if count == 3
    }
    interrupted = [trial for trial, count in reports.items() if count < 3]

    resumed = subprocess.run(
        [sys.executable, "-m", "raylung", "tune", "--resume", str(experiment)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for trial, snapshot in finished.items():  # never trained again
        assert (experiment / "trials" / trial / "checkpoint_manager_snapshot.json").read_bytes() == snapshot
    assert interrupted and all(epochs_reported_per_trial(experiment)[t] == 3 for t in interrupted)
    results = json.loads((experiment / "results.json").read_text())
    assert len(results) == 3
    for result in results:  # the interrupted trial's history too: every epoch exactly once
        assert [row["epoch"] for row in result["history"]] == [1, 2, 3]
    assert len({json.dumps(r["params"], sort_keys=True) for r in results}) == 3
    assert Experiment.at(experiment).best_json.is_file()
    # One W&B history per trial: the interrupted one's last folder holds every epoch once, and
    # the folder its killed process left is out of what `wandb sync` uploads.
    wandb_dir = Experiment.at(experiment).wandb_dir / "wandb"
    for result in results:
        (folder,) = run_folders(wandb_dir, result["trial_id"])
        rows = history_rows(next(folder.glob("*.wandb")))
        assert [row["epoch"] for row in rows if "epoch" in row] == [1, 2, 3], result["trial_id"]
    for trial in interrupted:
        assert run_folders(wandb_dir / SUPERSEDED, trial), trial


def test_reports_reach_tune_in_order_when_the_run_returns_right_after_its_last_one(ray_cluster, tmp_path):
    from ray import tune

    from raylung.cluster.connect import TRIAL_DRIVER_RESOURCE

    def reports_then_returns(config: dict) -> None:  # nested: Ray pickles it by value
        """A trial whose 'Train run' reports and returns at once: the race of Ray's own callback."""
        from raylung.tune.reports import fit_reporting_to_tune

        def fake_fit(callbacks):
            for epoch in range(1, config["epochs"] + 1):
                callbacks[0].after_report(None, [{"epoch": epoch, "val_loss": 1.0 / epoch}], None)
            if config["fail"]:
                raise ValueError("the train run failed")
            return "fitted"

        assert fit_reporting_to_tune(fake_fit) == "fitted"

    trainable = tune.with_resources(reports_then_returns, {"CPU": 0, TRIAL_DRIVER_RESOURCE: 1})
    tuner = tune.Tuner(
        trainable,
        param_space={"epochs": 5, "fail": tune.grid_search([False, False, False, True])},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="reports", verbose=0),
    )
    start = time.monotonic()
    grid = tuner.fit()
    assert time.monotonic() - start < 240  # Ray's callback could hang here for good
    ok = [r for r in grid if not r.config["fail"]]
    assert len(ok) == 3 and all(r.error is None for r in ok)
    for result in ok:  # every report, once, in order
        assert list(result.metrics_dataframe["epoch"]) == [1, 2, 3, 4, 5]
        assert result.metrics["training_iteration"] == 5
    (failed,) = [r for r in grid if r.config["fail"]]
    assert failed.error is not None and "the train run failed" in str(failed.error)


def _train_worker_pids(ray_cluster) -> list[int]:
    """The Ray Train worker processes of the session cluster (Ray names them by actor class)."""
    pids = []
    for pid in ray_cluster.session_pids():
        try:
            if b"RayTrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return pids


def test_a_trial_whose_worker_is_killed_errors_and_the_search_ends_on_one_line(
    ray_cluster, demo_root, tmp_path
):
    """A killed training worker fails its trial (no retries); the other trial finishes. The search
    writes its results, then says in one line which trial errored, why, what is kept and how to
    continue, and exits 2; Ray's tracebacks are in raylung.log, not on the console."""
    storage = tmp_path / "exp"
    args = ["tune", str(SMOKE)]
    for item in smoke_overrides(
        storage,
        demo_root,
        "search.num_samples=2",
        "search.max_concurrent_trials=1",
        "search.asha.enabled=false",
        "train.epochs=2",
        "train.max_failures=0",
        "wandb.mode=disabled",
    ):
        args += ["--set", item]
    proc = start_raylung(*args)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:  # the first trial has reported its first epoch
            experiment = next((p.parent for p in storage.glob("smoke-*/trials")), None)
            if experiment and 1 in epochs_reported_per_trial(experiment).values():
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        else:
            raise AssertionError("the first trial never reported an epoch")
        (killed,) = epochs_reported_per_trial(experiment)
        for pid in _train_worker_pids(ray_cluster):
            os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=500)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-5000:]
    (line,) = [line for line in out.splitlines() if line.startswith("error:")]
    assert f"1 of 2 trial(s) errored ({killed}: a worker process" in line and " died)" in line
    assert f"continue with raylung tune --resume {experiment}" in line
    results = json.loads((experiment / "results.json").read_text())
    assert sorted(r["status"] for r in results) == ["completed", "error"]
    best = json.loads((experiment / "best.json").read_text())
    assert best["trial_id"] != killed
    assert "Traceback" in (experiment / "raylung.log").read_text()  # Ray's details, kept
