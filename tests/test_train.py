"""Real Ray Train runs on the session's two-node cluster: convergence, global metrics, faults.

Everything here trains for real (tiny model, small images, CPU) through `TorchTrainer`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import start_raylung
from run_factory import tiny_config, write_tiny_yaml
from wandb_records import history_rows, run_config

from raylung.data import SplitSet
from raylung.workflows import train as workflow

pytestmark = pytest.mark.slow


def history_epochs(run_dir: Path) -> list[int]:
    return [int(row["epoch"]) for row in json.loads((run_dir / "metrics.json").read_text())["history"]]


def test_two_worker_run_converges_and_exports(ray_address, demo_root, tmp_path):
    cfg = tiny_config(demo_root, tmp_path, workers=2, epochs=4, overrides=["wandb.mode=offline"])
    outcome = workflow.train(cfg, output=str(tmp_path / "run"), progress=False)

    assert [row["epoch"] for row in outcome.history] == [1, 2, 3, 4]
    assert all(row["world_size"] == 2 for row in outcome.history)
    assert outcome.history[-1]["train_loss"] < outcome.history[0]["train_loss"]
    assert outcome.best_metrics["val_auroc"] >= 0.85, outcome.best_metrics
    assert outcome.best_metrics["val_accuracy"] >= 0.7, outcome.best_metrics
    best = min(outcome.history, key=lambda row: row["val_loss"])
    assert outcome.best_metrics["epoch"] == best["epoch"]
    assert (outcome.export / "model.safetensors").is_file()
    assert (outcome.directory / "plots" / "learning_curves.png").stat().st_size > 1000
    saved = json.loads((outcome.directory / "config.json").read_text())
    assert saved["data"]["splits_file"].endswith("splits.csv")
    # The pipeline recorded before training is the one that trained: the exported weights'
    # model, rebuilt, has its parameter count and architecture fingerprint.
    from raylung.artifacts.loader import load_export
    from raylung.plan.effective import architecture_fingerprint

    pipeline = json.loads((outcome.directory / "pipeline.json").read_text())
    trained = load_export(outcome.export).model
    assert pipeline["model"]["params"] == sum(p.numel() for p in trained.parameters())
    assert pipeline["model"]["fingerprint"] == architecture_fingerprint(trained)
    # W&B: rank 0 alone logged one offline run, inside the run directory, one row per epoch.
    (run_file,) = (outcome.directory / "wandb").rglob("run-*.wandb")
    assert run_config(run_file)["effective"]["digest"] == pipeline["digest"]
    rows = [r for r in history_rows(run_file) if "val_loss" in r]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["val_auroc"] == pytest.approx(outcome.history[-1]["val_auroc"])
    assert outcome.wandb_dirs == [run_file.parent]


def _evaluate_fixed_model(loop_config):
    """Ray Train loop: validation metrics of fixed weights, through the library's code path."""
    import ray.train
    import ray.train.torch

    from raylung.artifacts.inference import predict_split
    from raylung.artifacts.precision import resolve_precision
    from raylung.config.model_build import build_model
    from raylung.data import LungDataset
    from raylung.train.loop import make_loader

    cfg = loop_config["config"]
    model = build_model(cfg.model, cfg.data.in_chans)
    model.load_state_dict(torch.load(loop_config["weights"], weights_only=True))
    model = ray.train.torch.prepare_model(model)
    dataset = LungDataset(SplitSet.load(cfg.data.splits_file)["validation"], cfg.data, train=False)
    loader = make_loader(dataset, 4, False, cfg, pin_memory=False)
    predictions = predict_split(model, loader, resolve_precision(cfg.train, torch.device("cpu")))
    metrics = predictions.metrics()
    metrics["n"] = len(predictions.index)
    # Every rank computes the same global metrics; each writes its own copy to compare.
    rank = ray.train.get_context().get_world_rank()
    Path(loop_config["out"], f"rank{rank}.json").write_text(json.dumps(metrics))


def test_ddp_validation_metrics_equal_single_worker(ray_address, demo_root, tmp_path):
    """Metrics are computed over the whole split on every rank, never over one shard."""
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raylung.config.model_build import build_model
    from raylung.data import resolve_splits

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = tiny_config(demo_root, tmp_path)
    splits = resolve_splits(cfg.data)
    # An odd-sized split: the distributed sampler pads one shard with a repeated sample.
    cancer = [s for s in splits["validation"] if s.label == 1]
    benign = [s for s in splits["validation"] if s.label == 0]
    odd = SplitSet({**splits, "validation": cancer[:8] + benign[:7]})
    odd.save(tmp_path / "splits.csv")
    cfg = cfg.model_copy(
        update={"data": cfg.data.model_copy(update={"splits_file": str(tmp_path / "splits.csv")})}
    )
    torch.manual_seed(0)
    torch.save(build_model(cfg.model, 3).state_dict(), tmp_path / "weights.pt")

    results = {}
    for workers in (1, 2):
        out = tmp_path / f"world{workers}"
        out.mkdir()
        trainer = TorchTrainer(
            _evaluate_fixed_model,
            train_loop_config={"config": cfg, "weights": str(tmp_path / "weights.pt"), "out": str(out)},
            scaling_config=ScalingConfig(num_workers=workers),
            run_config=RunConfig(name=f"eval{workers}", storage_path=str(tmp_path / "ray")),
        )
        trainer.fit()
        results[workers] = [json.loads((out / f"rank{r}.json").read_text()) for r in range(workers)]
    single, (rank0, rank1) = results[1][0], results[2]
    assert single["n"] == rank0["n"] == rank1["n"] == 15
    for key in ("val_accuracy", "val_precision", "val_recall", "val_f1", "val_auroc", "val_loss"):
        assert rank0[key] == rank1[key], key
        assert rank0[key] == pytest.approx(single[key], abs=1e-6), key


def _wait_for_reports(run_dir: Path, count: int, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    snapshot = run_dir / "run" / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early:\n{proc.stdout.read()}")
        try:
            if json.loads(snapshot.read_text())["current_report_index"] >= count:
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no {count} reports within {timeout_s} s")


def _train_worker_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return [a.pid for a in actors]


def test_killed_worker_is_replaced_and_run_finishes_from_checkpoint(ray_address, demo_root, tmp_path):
    config = write_tiny_yaml(tmp_path / "tiny.yaml", demo_root, tmp_path, epochs=6, workers=2)
    run_dir = tmp_path / "run"
    proc = start_raylung("train", str(config), "--output", str(run_dir))
    _wait_for_reports(run_dir, 2, proc)
    pids = _train_worker_pids()
    assert len(pids) == 2
    os.kill(pids[1], signal.SIGKILL)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    assert "resumed from checkpoint after epoch" in out
    # Every epoch exactly once: none lost, none double-counted.
    assert history_epochs(run_dir) == [1, 2, 3, 4, 5, 6]


def test_interrupted_run_resumes_with_cli(ray_address, demo_root, tmp_path):
    config = write_tiny_yaml(tmp_path / "tiny.yaml", demo_root, tmp_path, epochs=5, workers=1)
    run_dir = tmp_path / "run"
    proc = start_raylung("train", str(config), "--output", str(run_dir))
    _wait_for_reports(run_dir, 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies, as on a lost terminal
    proc.wait(timeout=60)

    again = start_raylung("train", str(config), "--output", str(run_dir))
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 2 and "--resume" in out  # never silently restarts a run

    resumed = start_raylung("train", "--output", str(run_dir), "--resume")
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out
    assert "resumed from checkpoint after epoch" in out
    assert history_epochs(run_dir) == [1, 2, 3, 4, 5]


@pytest.mark.shared_data
def test_lc25000_grouped_split_reaches_held_out_accuracy(ray_address, lc25000_root, tmp_path):
    """Real H&E tiles, grouped by original tile: a small attention ResNet must exceed 0.85."""
    from raylung.artifacts.evaluate import evaluate

    cfg = tiny_config(
        lc25000_root,
        tmp_path,
        epochs=6,
        overrides=[
            "data.image_size=[64,64]",
            "train.batch_size=32",
            "train.lr=0.003",
            "model.name=resnet_ours_tiny",
            "data.augment.policy=light",
        ],
    )
    outcome = workflow.train(cfg, output=str(tmp_path / "run"), progress=False)
    splits = SplitSet.load(outcome.config.data.splits_file)
    groups = {name: {s.group for s in samples} for name, samples in splits.items()}
    assert not groups["train"] & groups["test"] and not groups["validation"] & groups["test"]
    report = evaluate(outcome.export, "test", out_dir=tmp_path / "test", n_boot=200, device="cpu")
    assert report.metrics["accuracy"] > 0.85, report.metrics
    assert np.isfinite(report.metrics["auroc"]) and report.metrics["auroc"] > 0.9


def test_uri_storage_keeps_checkpoints_and_driver_files_there(ray_address, demo_root, tmp_path):
    """Experiment storage given as a URI (file:// here; s3:// on a cluster goes the same way)."""
    config = write_tiny_yaml(tmp_path / "tiny.yaml", demo_root, tmp_path, epochs=2)
    store = tmp_path / "store"
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "raylung",
            "train",
            str(config),
            "--set",
            f"experiment.storage=file://{store}",
            "--set",
            "experiment.name=uri",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (run,) = store.glob("uri-*")
    assert (run / "config.json").is_file() and (run / "splits.csv").is_file()
    assert (run / "export" / "model.safetensors").is_file()
    assert list((run / "run").glob("checkpoint_*/model.safetensors"))
    # The driver worked in a local mirror and pushed everything to the URI.
    assert (tmp_path / "home" / ".raylung" / "experiments" / run.name / "config.json").is_file()
