"""Fast checks of the benchmark scripts: argument parsing, arithmetic, timeline bookkeeping,
and the hooks they time raylung with (no Ray started).

The benchmarks themselves take minutes; here their arithmetic, the suite's summary writer and
``gpu.py --dry-run`` (CPU, tiny images) are checked on their own, and the plain run of
``train_overhead.py`` -- raylung's own ``build_run`` and ``run_epochs`` on a tiny config --
runs for real, so the phase hooks are seen recording every phase of the loop.
"""

from __future__ import annotations

import ast
import json
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from raylung.train.hooks import PHASES
from raylung.train.host_memory import KEEP_FREED_MEMORY_ENV

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import gpu  # noqa: E402
import gpu_cases  # noqa: E402
import host_memory  # noqa: E402
import model_step  # noqa: E402
import run_all  # noqa: E402
import step_split  # noqa: E402
import timeline  # noqa: E402
import train_overhead  # noqa: E402
import train_runs  # noqa: E402
import train_scaling  # noqa: E402
import tune_overhead  # noqa: E402
import tune_summary  # noqa: E402

# --- benchmarks call raylung, never patch it --------------------------------------------------


@pytest.mark.parametrize("path", sorted(BENCH_DIR.glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_never_replace_attributes_of_other_modules(path):
    """No setattr, and no assignment to an attribute of an imported module (``loop.x = ...``)."""
    tree = ast.parse(path.read_text())
    imported = {
        (alias.asname or alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "setattr", f"{path.name}:{node.lineno} calls setattr"
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                assert target.value.id not in imported, f"{path.name}:{node.lineno} patches {target.value.id}"


# --- the training loop, timed through its hooks -------------------------------------------------


REPORTED_KEYS = {  # what every epoch's ray.train.report carries (the tracker and Tune read them)
    *(f"val_{k}" for k in ("accuracy", "precision", "recall", "f1", "auroc", "loss")),
    "epoch",
    "train_loss",
    "images_per_s",
    "epoch_time_s",
    "lr",
    "best_epoch",
    "stopped_early",
    "world_size",
    "nodes",
    "best_val_loss",
}


def _train_images(cfg) -> int:
    from raylung.data import SplitSet
    from raylung.data.splits import training_samples

    return len(training_samples(cfg.data, SplitSet.load(cfg.data.splits_file)))


@pytest.fixture(scope="module")
def tiny_run(demo_root, tmp_path_factory, one_torch_thread):
    """A tiny config with its split fixed, as ``fit`` needs it (2 epochs, 8 steps each)."""
    from run_factory import tiny_config

    from raylung.train.launcher import prepare_splits

    work = tmp_path_factory.mktemp("plain")
    return prepare_splits(tiny_config(demo_root, work, epochs=2), str(work / "split"))


def test_plain_run_records_every_phase_of_raylungs_loop(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv(KEEP_FREED_MEMORY_ENV, "0")  # leave the test process's malloc as it is
    path = tmp_path / "timeline.jsonl"
    history = train_overhead.plain_run(tiny_run, path)
    events = timeline.read_events(path)

    assert [row["epoch"] for row in history] == [1, 2] and set(history[0]) == REPORTED_KEYS
    steps = -(-_train_images(tiny_run) // 16)  # batch 16, the last one short
    count = {phase: len(timeline.spans(events, "plain", phase)) for phase in PHASES}
    assert count == {
        "setup": 1,
        "train_epoch": 2,
        "data": 2 * steps,
        "train_step": 2 * steps,
        "validate": 2,
        "checkpoint_save": 2,
        "report": 2,
    }
    epochs = timeline.spans(events, "plain", "train_epoch")
    steps_in_first = [s for s in timeline.spans(events, "plain", "train_step") if s[1] <= epochs[0][1]]
    assert len(steps_in_first) == steps and all(epochs[0][0] <= b for b, _ in steps_in_first)
    (setup,) = timeline.spans(events, "plain", "setup")
    summary = train_runs.summarize_run(events, "plain", setup[0] - 1.0, events[-1]["t"])
    assert summary["epochs"] == 2 and summary["startup_s"] == pytest.approx(1.0)
    assert summary["setup_s"] == pytest.approx(epochs[0][0] - setup[0])
    assert 0 < summary["data_s"] + summary["step_s"] <= summary["train_s"]
    assert summary["train_s"] == pytest.approx(sum(row["epoch_time_s"] for row in history), rel=0.05)
    assert "startup_phases_s" not in summary  # no Ray controller in a plain run


def test_run_epochs_reports_each_epoch_with_its_checkpoint_and_resumes(tiny_run):
    import torch

    from raylung.artifacts.checkpoint import TrainState, load_state
    from raylung.train.epochs import run_epochs
    from raylung.train.parts import build_run

    reports = []

    def report(metrics, checkpoint):  # the folder exists only during the call
        saved = (checkpoint / "model.safetensors").is_file()
        reports.append((dict(metrics), load_state(checkpoint).epoch, saved))

    parts = build_run(tiny_run, torch.device("cpu"))
    assert len(parts.train_loader) == -(-_train_images(tiny_run) // 16)
    assert parts.train_loader.sampler.num_replicas == 1
    state = run_epochs(parts, TrainState(epoch=1), report)  # as if resumed after epoch 1
    assert [(m["epoch"], epoch, saved) for m, epoch, saved in reports] == [(2, 2, True)]
    assert set(reports[0][0]) == REPORTED_KEYS and state.epoch == 2 and len(state.history) == 1

    second = build_run(tiny_run, torch.device("cpu"), rank=1, world=2)  # rank 1 of 2 writes no checkpoint
    assert second.train_loader.sampler.rank == 1 and second.train_loader.batch_size == 8
    seen = []
    run_epochs(second, TrainState(epoch=1), lambda metrics, checkpoint: seen.append(checkpoint))
    assert seen == [None]


def test_timeline_hooks_pickle_and_default_hooks_do_nothing(tmp_path):
    from raylung.train.hooks import NO_HOOKS, PhaseHooks

    hooks = pickle.loads(pickle.dumps(timeline.TimelineHooks(tmp_path / "t.jsonl", run="r", rank=1)))
    assert isinstance(hooks, PhaseHooks) and isinstance(NO_HOOKS, PhaseHooks)
    with hooks.span("validate"), NO_HOOKS.span("validate"):
        pass
    events = timeline.read_events(tmp_path / "t.jsonl")
    # Unpickling marks the process once (its spawn time, for the start-up breakdown).
    (mark,) = [e for e in events if e["event"] == "process_up"]
    assert mark["role"] == "hooks" and mark["created"] <= mark["t"]
    assert [(e["event"], e["phase"], e["run"], e["rank"]) for e in events if e is not mark] == [
        ("validate", "begin", "r", 1),
        ("validate", "end", "r", 1),
    ]


# --- train_overhead / train_scaling -----------------------------------------------------------


def test_training_benchmark_flags_pick_and_override_the_plan():
    assert train_overhead.parse_args([]).plan == train_runs.Plan()
    quick = train_overhead.parse_args(["--quick", "--epochs", "3", "--image-size", "96", "64"]).plan
    assert quick.overhead_epochs == 3 and quick.image_size == (96, 64)
    assert quick.scaling_epochs == train_runs.QUICK.scaling_epochs
    assert quick.train_images == 4 * quick.per_subclass
    scaling = train_scaling.parse_args(["--quick", "--epochs", "2", "--split-steps", "4", "--skip", "split"])
    assert (scaling.plan.scaling_epochs, scaling.plan.split_steps, scaling.skip) == (2, 4, ["split"])
    assert scaling.plan.overhead_epochs == train_runs.QUICK.overhead_epochs
    for module in (train_overhead, train_scaling):
        with pytest.raises(SystemExit):
            module.parse_args(["--batch-size", "15"])


def _ray_events(run: str, t0: float) -> list[dict]:
    def at(event, t, rank=None):
        return {"event": event, "phase": "at", "t": t0 + t, "run": run, "rank": rank}

    def span(event, a, b, rank=0):
        return [
            {"event": event, "phase": "begin", "t": t0 + a, "run": run, "rank": rank},
            {"event": event, "phase": "end", "t": t0 + b, "run": run, "rank": rank},
        ]

    return [
        at("controller_start", 2.0),
        at("worker_group_start", 2.5),
        at("workers_created", 3.0),
        at("train_context_ready", 4.0, 0),
        at("worker_group_ready", 5.0),
        *span("setup", 5.5, 6.0),
        *span("train_epoch", 6.0, 16.0),
        *span("data", 6.0, 7.0),
        *span("train_step", 7.0, 16.0),
        *span("validate", 16.0, 17.0),
        *span("checkpoint_save", 17.0, 17.5),
        *span("report", 17.5, 18.0),
        *span("checkpoint_sync", 17.5, 17.6),
        *span("checkpoint_upload", 17.6, 17.8),
        *span("worker_group_shutdown", 18.5, 18.7, None),
        at("controller_finish", 19.0),
    ]


def test_summarize_run_splits_a_ray_run_and_overhead_compares_it_with_plain():
    events = _ray_events("r", 100.0)
    events += [
        {"event": e, "phase": p, "t": 200.0 + t, "run": "plain", "rank": 0}
        for e, p, t in (
            ("setup", "begin", 0.0),
            ("setup", "end", 0.5),
            ("train_epoch", "begin", 0.5),
            ("train_epoch", "end", 10.5),
            ("validate", "begin", 10.5),
            ("validate", "end", 11.5),
            ("checkpoint_save", "begin", 11.5),
            ("checkpoint_save", "end", 12.0),
        )
    ]
    ray_run = train_runs.summarize_run(events, "r", 100.0, 119.5)
    assert ray_run["startup_s"] == pytest.approx(5.5) and ray_run["setup_s"] == pytest.approx(0.5)
    assert ray_run["train_s"] == pytest.approx(10.0) and ray_run["report_s"] == pytest.approx(0.5)
    assert ray_run["data_s"] == pytest.approx(1.0) and ray_run["step_s"] == pytest.approx(9.0)
    assert ray_run["report_wait_s"] == pytest.approx(0.2) and ray_run["teardown_s"] == pytest.approx(1.5)
    assert ray_run["other_s"] == pytest.approx(0.0, abs=1e-9)
    assert sum(ray_run["startup_phases_s"].values()) == pytest.approx(ray_run["startup_s"])
    assert ray_run["teardown_phases_s"]["until the controller sees the end"] == pytest.approx(0.5)

    plain = train_runs.summarize_run(events, "plain", 200.0, 212.0)
    assert plain["startup_s"] == 0 and plain["report_s"] == 0 and plain["teardown_s"] == 0
    assert "startup_phases_s" not in plain
    result = train_overhead.overhead(plain, ray_run, ray_init_s=4.0)
    assert result["fraction_direct"] == pytest.approx(7.5 / 19.5)
    assert result["ray_only_s"] == pytest.approx(5.5 + 0.5 + 1.5)  # set-up was equal
    assert result["fraction_with_ray_init"] == pytest.approx(11.5 / 23.5)
    assert result["dominant"] == "start-up" and result["compute_ratio"] == pytest.approx(1.0)


def test_steady_images_per_s_leaves_out_the_first_epoch():
    history = [
        {"images_per_s": 10.0, "epoch_time_s": 10.0},
        {"images_per_s": 50.0, "epoch_time_s": 2.0},
        {"images_per_s": 25.0, "epoch_time_s": 4.0},
    ]
    assert train_runs.steady_images_per_s(history) == pytest.approx(200 / 6)
    assert train_scaling.scaling({"images_per_s": 10.0}, {"images_per_s": 18.0}) == pytest.approx(
        {"speedup": 1.8, "efficiency": 0.9, "met": True}
    )


def test_scaling_run_counts_cores_and_work_per_rank_from_the_hooks_spans():
    def epoch(rank, a, b, cpu_a, cpu_b):
        return [
            {"event": "train_epoch", "phase": "begin", "t": a, "cpu": cpu_a, "run": "s", "rank": rank},
            {"event": "train_epoch", "phase": "end", "t": b, "cpu": cpu_b, "run": "s", "rank": rank},
        ]

    events = [*epoch(0, 0, 4, 0, 4), *epoch(0, 4, 6, 4, 5), *epoch(1, 0, 4, 0, 4), *epoch(1, 4, 6, 4, 6)]
    history = [{"images_per_s": 10.0, "epoch_time_s": 4.0}, {"images_per_s": 40.0, "epoch_time_s": 2.0}]
    two = train_scaling.summarize_scaling_run(events, "s", 2, 0.0, 6.0, history, 7.0)
    assert two["rank_train_s"] == {0: 6.0, 1: 6.0} and two["cpu_s"] == 7.0
    assert two["cores_granted"] == pytest.approx(0.5 + 1.0)  # epoch 2: rank 0 got half a core
    assert two["images_per_cpu_s"] == pytest.approx(80 / 3)
    one = {**two, "workers": 1, "images_per_s": 25.0, "images_per_cpu_s": 40.0, "cores_granted": 1.0}
    combined = train_scaling.combine({"1": one, "2": two})
    assert combined["speedup"] == pytest.approx(40.0 / 25.0)
    assert combined["work_efficiency"] == pytest.approx((80 / 3) / 40.0)


def test_step_split_factors_multiply_to_the_ddp_speedup():
    def rank(mode_steps: dict[str, float], images: dict[str, int], allreduce=()):
        rows = [
            {
                "mode": m,
                "rank": 0,
                "images": images[m],
                "data": 0.01,
                "forward": s / 3,
                "backward": s / 2,
                "optimizer": 0.0,
                "step": s,
            }
            for m, s in mode_steps.items()
            for _ in range(3)
        ]
        return {"rows": rows, "allreduce_s": list(allreduce), "params": 1000}

    solo = rank(
        {"1 process, global batch": 0.2, "1 process, half batch": 0.12},
        {"1 process, global batch": 16, "1 process, half batch": 8},
        (0.004,),
    )
    ddp = rank({"ddp sync": 0.15, "ddp no_sync": 0.13}, {"ddp sync": 8, "ddp no_sync": 8})
    ranks = {0: {**solo, "rows": solo["rows"] + ddp["rows"]}, 1: ddp}
    split = step_split.summarize_split(ranks, 16)
    assert split["speedup_ddp"] == pytest.approx((16 / 0.15) / 80)
    product = 2 * split["batch_effect"] * split["machine_ceiling"] * split["sync_cost"]
    assert product == pytest.approx(split["speedup_ddp"])
    assert split["exposed_allreduce_s"] == pytest.approx(0.01) and split["allreduce_flat_s"] == 0.004


def test_timeline_callback_records_ray_phases(tmp_path):
    path = tmp_path / "timeline.jsonl"
    callback = timeline.Timeline(str(path))
    callback.after_controller_start(SimpleNamespace(run_config=SimpleNamespace(name="run-1")))
    assert callback.before_init_train_context([]) == {}
    with callback.on_checkpoint_sync(), callback.on_checkpoint_transfer():
        pass
    callback.after_controller_finish(None)
    events = timeline.read_events(path)
    assert [e["event"] for e in events if e["phase"] == "at"] == [
        "controller_start",
        "workers_created",
        "controller_finish",
    ]
    assert len(timeline.spans(events, "run-1", "checkpoint_sync", rank=None)) == 1
    assert len(timeline.spans(events, "run-1", "checkpoint_upload", rank=None)) == 1
    assert timeline.moment(events, "run-1", "controller_finish") == events[-1]["t"]


def test_cpu_meter_counts_a_child_process_that_exits_inside_the_block():
    import subprocess

    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    with timeline.CpuMeter(interval_s=0.05) as meter:
        subprocess.run([sys.executable, "-S", "-c", busy], check=True)
    assert meter.seconds is not None and 0.4 <= meter.seconds < 5


# --- tune_overhead --------------------------------------------------------------------------


def test_tune_overhead_overrides_make_a_valid_smoke_config_with_every_epoch_run(tmp_path):
    from raylung.config.loading import load_config

    args = tune_overhead.parse_args(["--quick", "--no-compare"])
    assert (args.trials, args.epochs, args.compare) == (2, 2, False)
    cfg = load_config(tune_overhead.SMOKE, tune_overhead.overrides(tmp_path, "x", 3, 5)).config
    assert cfg.search.asha.enabled is False and cfg.train.patience is None
    assert cfg.search.num_samples == 3 and cfg.train.epochs == 5 and cfg.wandb.mode == "disabled"
    assert cfg.experiment.storage == str(tmp_path / "x")


def test_tune_child_env_names_a_ray_train_callback_ray_can_build(tmp_path, monkeypatch):
    """Each trial's TorchTrainer builds the Timeline from RAY_TRAIN_CALLBACKS, as Ray does."""
    from ray.train.v2._internal.callbacks.env_callback import _initialize_env_callbacks

    env = tune_overhead.child_env("2", tmp_path / "t.jsonl")
    assert env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "2" and "RAY_ADDRESS" not in env
    assert str(BENCH_DIR) in env["PYTHONPATH"].split(":")
    for key in ("RAY_TRAIN_CALLBACKS", timeline.TIMELINE_ENV):
        monkeypatch.setenv(key, env[key])
    (callback,) = _initialize_env_callbacks()
    assert isinstance(callback, timeline.Timeline) and callback.path == str(tmp_path / "t.jsonl")


def test_summarize_tune_counts_overhead_start_up_and_concurrency():
    clocks = {
        "a": {"created": -1.5, "start": 0.0, "first_result": 12.0, "complete": 20.0},
        "b": {"start": 1.0, "first_result": 13.0, "complete": 22.0},
        "c": {"start": 20.0, "first_result": 30.0, "complete": 36.0},
    }
    histories = {t: [{"epoch_time_s": 2.0}, {"epoch_time_s": 2.0}] for t in clocks}
    events = [
        {"event": event, "phase": p, "t": t, "run": "a", "rank": 0}
        for event, p, t in (
            ("validate", "begin", 14.0),
            ("validate", "end", 14.5),
            ("validate", "begin", 17.0),
            ("validate", "end", 17.5),
            ("train_epoch", "begin", 10.0),
            ("train_epoch", "end", 12.0),
            ("setup", "begin", 8.0),
            ("setup", "end", 10.0),
            ("report", "begin", 18.0),
            ("report", "end", 18.5),
        )
    ]
    events.append({"event": "controller_start", "phase": "at", "t": 5.0, "run": "a", "rank": None})
    result = tune_summary.summarize_tune(clocks, histories, events, 40.0, {"run": 38.0}, 5.0)
    assert result["concurrency"] == 2 and result["n_trials"] == 3 and result["loop_phases_recorded"]
    a = next(t for t in result["trials"] if t["trial_id"] == "a")
    assert a["overhead_s"] == pytest.approx(20.0 - 4.0 - 1.0) and a["startup_s"] == pytest.approx(10.0)
    assert a["startup_raw_s"] == pytest.approx(10.0) and a["teardown_s"] == pytest.approx(1.5)
    assert a["startup_from_created_s"] == pytest.approx(11.5)  # the actor's creation counts too
    assert a["startup_phases_s"]["data and model set-up in the worker"] == pytest.approx(2.0)
    assert sum(a["startup_phases_s"].values()) == pytest.approx(a["startup_s"])
    b = next(t for t in result["trials"] if t["trial_id"] == "b")
    assert b["validate_s"] is None and b["report_s"] is None  # no loop phases: n/a, not 0
    assert b["startup_from_created_s"] is None and result["mean"]["startup_from_created_s"] == 11.5
    assert result["experiment_overhead_per_trial_s"] == pytest.approx((2 * 40.0 - 12.0 - 1.0) / 3)
    ours = {**result, "tune_wall_s": 40.0}
    slower = {**result, "tune_wall_s": 50.0, "phases_s": {"run": 47.5}}
    comparison = tune_summary.compare(
        {tune_summary.RAYLUNG_INTERVAL: ours, tune_summary.RAY_DEFAULT_INTERVAL: slower}
    )
    assert comparison["tune_wall_ratio"] == pytest.approx(1.25)
    assert comparison["tuner_run_ratio"] == pytest.approx(1.25)
    assert tune_summary.compare({tune_summary.RAYLUNG_INTERVAL: ours}) is None


def test_overlap_counts_intervals_open_at_once():
    assert tune_summary.overlap([(0, 2), (1, 3), (2, 4)]) == 2  # one ends as the next starts
    assert tune_summary.overlap([(0, 5), (1, 2), (1.5, 3)]) == 3
    assert tune_summary.overlap([]) == 0


# --- run_all --------------------------------------------------------------------------------


def _fake_results(suite: Path) -> dict[str, dict]:
    data = {
        "model_step": {
            "config": {"batch_size": 8},
            "results": {
                "resnet_ours50": {"params": 24e6, "median_s": 4.0, "ratio_to_resnet50": 1.25},
                "resnet50": {"params": 23.5e6, "median_s": 3.2, "ratio_to_resnet50": 1.0},
            },
        },
        "data_loading": {
            "loader": [
                {
                    "source": "LC25000 224x224",
                    "cache": True,
                    "workers": 2,
                    "images_per_s": 500.0,
                    "ratio_to_train_step": 250.0,
                }
            ],
            "train_step": {"model": "raylung resnet_ours50", "images_per_s": 2.0},
        },
        "train_overhead": {
            "ray_init_s": 5.0,
            "overhead": {
                "plain": {"wall_s": 100.0},
                "ray": {"wall_s": 108.0, "startup_s": 6.0, "report_s": 1.0, "teardown_s": 0.6},
                "fraction_direct": 0.074,
                "fraction_ray_only": 0.07,
                "dominant": "start-up",
            },
        },
        "train_scaling": {
            "scaling": {
                "runs": {"1": {"images_per_s": 50.0}, "2": {"images_per_s": 90.0}},
                "speedup": 1.8,
                "efficiency": 0.9,
            },
            "step_split": {"machine_ceiling": 0.8, "batch_effect": 1.1, "sync_cost": 0.95},
        },
        "tune_overhead": {
            "settings": {
                "raylung (0.25 s)": {
                    "n_trials": 4,
                    "tune_wall_s": 60.0,
                    "sum_train_s": 20.0,
                    "sum_validate_s": 2.0,
                    "mean": {"overhead_s": 12.0, "startup_s": 9.0},
                    "experiment_overhead_per_trial_s": 24.5,
                }
            },
            "health_check": {"tune_wall_ratio": 1.3, "trial_teardown_s_saved": 3.1},
        },
    }
    runs = {}
    for name, payload in data.items():
        path = suite / f"{name}.json"
        path.write_text(json.dumps(payload))
        runs[name] = {"status": "ok", "seconds": 12.0, "json": str(path)}
    return runs


def test_run_all_summary_has_a_table_and_ratios_per_benchmark(tmp_path):
    runs = _fake_results(tmp_path)
    runs["broken"] = {"status": "failed (exit 1)", "seconds": 3.0, "json": str(tmp_path / "absent.json")}
    (tmp_path / "bad.json").write_text(json.dumps({"results": {}}))
    runs_bad = {"data_loading": {"status": "ok", "seconds": 1.0, "json": str(tmp_path / "bad.json")}}
    machine = {"cpu_count": 2, "torch": "x"}
    summary = run_all.build_summary(runs, machine)
    json_path, md_path = run_all.write_summary(summary, tmp_path / "results")

    saved = json.loads(json_path.read_text())
    assert saved["machine"] == machine
    bench = saved["benchmarks"]
    assert bench["model_step"]["ratios"] == {"resnet_ours50 / resnet50 step time": 1.25}
    assert bench["data_loading"]["ratios"]["loader >= 3x train step everywhere"] is True
    assert bench["train_overhead"]["ratios"]["largest Ray-only part"] == "start-up"
    assert bench["train_scaling"]["ratios"]["scaling efficiency"] == 0.9
    assert bench["train_scaling"]["ratios"]["step split: sync cost"] == 0.95
    assert bench["tune_overhead"]["ratios"]["2 s vs 0.25 s health check: tune_wall_ratio"] == 1.3
    assert "rows" not in bench["broken"] and bench["broken"]["status"] == "failed (exit 1)"
    assert "summary_error" in run_all.build_summary(runs_bad, machine)["benchmarks"]["data_loading"]

    markdown = md_path.read_text()
    for name in ("model_step", "data_loading", "train_overhead", "train_scaling", "tune_overhead", "broken"):
        assert f"## {name}" in markdown
    assert "| resnet_ours50 | 24 | 4 | 1.25 | 2 |" in markdown
    assert "| overhead (wall difference / Ray wall) | 0.074 |" in markdown
    assert "cpu_count 2" in markdown


def test_run_all_runs_each_benchmark_with_its_short_flags(tmp_path):
    args = run_all.parse_args(["--skip", "model_step", "data_loading"])
    assert args.names == ["train_overhead", "train_scaling", "tune_overhead"]
    command = run_all.command("train_overhead", tmp_path / "t.json")
    assert command[1].endswith("benchmarks/train_overhead.py") and "--quick" in command
    assert command[-2:] == ["--out", str(tmp_path / "t.json")]
    assert "--quick" in run_all.command("tune_overhead", tmp_path / "x.json")
    with pytest.raises(SystemExit):
        run_all.parse_args(["--only", "gpu"])


# --- gpu --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A10G", 70.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", None),
        ("Tesla T4", None),
    ],
)
def test_gpu_peak_table_matches_device_names(name, peak):
    assert gpu_cases.peak_tflops(name)[0] == peak
    assert gpu_cases.peak_tflops(name, override=123.0) == (123.0, "--peak-tflops")


def test_gpu_plan_puts_eager_bf16_channels_last_first_and_compile_last_within_budget():
    plan = gpu_cases.build_plan(["resnet_ours50", "resnet50"], [8, 32, 64, 128], [64])
    assert len(plan) == 2 * 4 * 4 + 2 + 2
    plain = [c for c in plan if c.mode == "plain"]  # kernels off: only for ResNet-ours, bf16 first
    assert [(c.model, c.batch, c.precision) for c in plain] == [
        ("resnet_ours50", 64, p) for p in ("bf16", "fp32")
    ]
    assert (plan[0].precision, plan[0].layout, plan[0].mode) == ("bf16", "channels_last", "eager")
    assert [c.model for c in plan[:2]] == ["resnet_ours50", "resnet50"]
    assert all(c.mode == "compile" for c in plan[-2:]) and len({c.label for c in plan}) == len(plan)
    assert len(gpu_cases.build_plan(["m"], [8], [8], compile_=False)) == 4
    compile_case, eager_case = plan[-1], plan[0]
    assert gpu_cases.may_start(eager_case, 290, 300) and not gpu_cases.may_start(compile_case, 290, 300)
    assert not gpu_cases.may_start(eager_case, 301, 300)
    assert gpu_cases.mfu(1000.0, 30.0, 100.0) == pytest.approx(0.3) and gpu_cases.mfu(1.0, 1.0, None) is None


def test_model_step_times_raylungs_adam_beside_pytorchs_per_tensor_adam(
    tmp_path, one_torch_thread, monkeypatch
):
    """``--compile`` is only planned here: one tiny ResNet-ours compile costs minutes on this CPU."""
    monkeypatch.setenv(KEEP_FREED_MEMORY_ENV, "0")  # leave the test process's malloc as it is
    out = tmp_path / "model_step.json"
    tiny = ["--batch-size", "2", "--height", "32", "--width", "32", "--repeats", "1", "--warmup", "0"]
    models = ["resnet50", "resnet_ours_tiny"]
    flags = ["--adam-reference", "--contiguous-reference", "--threads", "1", "--out", str(out)]
    model_step.main(["--models", *models, *flags, *tiny])
    saved = json.loads(out.read_text())
    results = saved["results"]
    assert saved["config"]["keep_freed_memory"] is False
    assert saved["commit"] == _checkout_commit()  # a result names the code that made it
    assert all(r["minor_faults_median"] >= 0 for r in results.values())
    variants = ("", " (per-tensor Adam)", " (contiguous)")
    assert set(results) == {name + variant for name in models for variant in variants}
    assert all(0 < r["adam_median_s"] < r["median_s"] and r["compile_s"] is None for r in results.values())
    assert results["resnet50"]["ratio_to_resnet50"] == 1.0
    labels = [e.label for e in model_step.plan_entries(["resnet50"], True, True, True, True)]
    assert labels == [
        "resnet50",
        model_step.REFERENCE,
        "resnet50 (per-tensor Adam)",
        "resnet50 (compiled)",
        "resnet50 (contiguous)",
    ]


def test_model_step_runs_under_bf16_autocast(tmp_path, one_torch_thread, monkeypatch):
    monkeypatch.setenv(KEEP_FREED_MEMORY_ENV, "0")
    out = tmp_path / "model_step.json"
    tiny = ["--batch-size", "2", "--height", "32", "--width", "32", "--repeats", "1", "--warmup", "0"]
    model_step.main(
        ["--models", "resnet_ours_tiny", "--amp", "bf16", "--threads", "1", "--out", str(out), *tiny]
    )
    saved = json.loads(out.read_text())
    assert saved["config"]["amp"] == "bf16" and saved["results"]["resnet_ours_tiny"]["median_s"] > 0
    import torch

    seen: list[torch.dtype] = []
    for autocast, expected in ((torch.bfloat16, torch.bfloat16), (None, torch.float32)):
        seen.clear()
        step, _ = model_step.make_step(
            model_step.Entry("resnet_ours_tiny", "resnet_ours_tiny"),
            2,
            32,
            32,
            True,
            model_hook=lambda m: m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype)),
            autocast=autocast,
        )
        step()
        assert seen == [expected]  # the forward ran under autocast exactly when asked


def _checkout_commit() -> str:
    import subprocess

    repo = BENCH_DIR.parent
    if not (repo / ".git").exists():
        return "unknown"
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(repo), "diff", "--quiet", "HEAD", "--"], capture_output=True
    ).returncode
    return head.stdout.strip() + ("+dirty" if dirty else "")


def test_gpu_without_cuda_exits_with_a_clear_message():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        gpu.main(["--max-minutes", "0"])


def test_gpu_dry_run_builds_the_model_and_runs_the_eager_plan_on_cpu(tmp_path):
    import torch

    from raylung.models import create_model
    from raylung.models.complexity import gflops

    out = tmp_path / "gpu.json"
    gpu.main(["--dry-run", "--models", "resnet_ours_tiny", "--out", str(out)])
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    assert len(rows) == 4 + 2 + 1 and saved["peak_bf16_tflops"] == 1.0 and saved["config"]["height"] == 32
    assert [r["mode"] for r in rows[-3:-1]] == ["plain", "plain"] and rows[-2]["status"] == "ok"
    eager = [r for r in rows if r["mode"] == "eager"]
    assert {(r["precision"], r["layout"]) for r in eager} == {
        ("bf16", "channels_last"),
        ("fp32", "contiguous"),
        ("bf16", "contiguous"),
        ("fp32", "channels_last"),
    }
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 for r in eager)
    assert rows[-1]["mode"] == "compile" and rows[-1]["status"].startswith("skipped")
    with torch.device("meta"):
        expected = 3 * gflops(create_model("resnet_ours_tiny"), (1, 3, 32, 48))
    row = eager[0]
    assert row["train_gflops_per_image"] == pytest.approx(expected)
    assert row["mfu"] == pytest.approx(row["images_per_s"] * expected * 1e9 / 1e12)
    assert saved["summary"]["best"]["resnet_ours_tiny"]["images_per_s"] == max(
        r["images_per_s"] for r in eager
    )


def test_gpu_summary_ratios_compare_switches_and_models():
    def row(model, precision, layout, speed, mode="eager"):
        return {
            "model": model,
            "batch": 32,
            "precision": precision,
            "layout": layout,
            "mode": mode,
            "status": "ok",
            "images_per_s": speed,
            "mfu": None,
        }

    rows = [
        row("a", "fp32", "contiguous", 100.0),
        row("a", "bf16", "contiguous", 250.0),
        row("a", "bf16", "channels_last", 300.0),
        row("a", "bf16", "channels_last", 360.0, "compile"),
        row("b", "fp32", "contiguous", 200.0),
        row("b", "bf16", "channels_last", 600.0),
        {**row("b", "bf16", "contiguous", 0.0), "status": "out of memory"},
    ]
    summary = gpu_cases.summarize(rows)
    assert summary["best"]["a"]["mode"] == "compile" and summary["best"]["b"]["images_per_s"] == 600.0
    ratios = {(s["model"], s["switch"]): s["ratio"] for s in summary["speedups"]}
    assert ratios[("a", "bf16 / fp32 (contiguous)")] == pytest.approx(2.5)
    assert ratios[("a", "compile / eager (bf16 channels_last)")] == pytest.approx(1.2)
    assert ratios[("b", "bf16 channels_last / fp32 contiguous")] == pytest.approx(3.0)
    assert ("b", "channels_last / contiguous (bf16)") not in ratios  # its contiguous run ran out of memory
    assert summary["a / b images/s (median over configs)"] == pytest.approx(0.5)


def test_startup_breakdown_follows_each_process_of_a_trial():
    def at(event, t, pid, cpu=0.0, rank=None, phase="at", **extra):
        return {
            "event": event,
            "phase": phase,
            "t": t,
            "cpu": cpu,
            "pid": pid,
            "run": "a",
            "rank": rank,
        } | extra

    def up(t, pid, cpu, role, created, trial=None):
        return {"event": "process_up", "phase": "up", "t": t, "cpu": cpu, "pid": pid, "role": role} | {
            "created": created,
            "trial": trial,
        }

    events = [
        # the trial actor: an idle worker Ray started before the trial (spawn counts as 0)
        up(2.0, 1, 1.0, "hooks", -5.0, trial="a"),
        up(3.0, 1, 2.5, "trainer", -5.0, trial="a"),
        up(5.0, 2, 1.2, "callback", 4.0),
        at("controller_start", 6.0, 2, cpu=3.0),
        at("worker_group_start", 6.5, 2),
        up(9.0, 3, 1.5, "callback", 7.0),
        at("train_context_ready", 10.0, 3, rank=0),
        at("worker_group_ready", 10.5, 2),
        at("train_fn_launched", 10.6, 2),
        at("setup", 12.0, 3, rank=0, phase="begin"),
        at("setup", 13.0, 3, rank=0, phase="end"),
        at("train_epoch", 13.0, 3, cpu=6.0, rank=0, phase="begin"),
    ]  # fmt: skip
    phases = tune_summary.startup_breakdown(events, "a", 0.0, 13.0)
    assert phases is not None and sum(phases.values()) == pytest.approx(13.0)
    assert phases["Tune start -> trial actor process spawned"] == 0.0
    assert phases["trial actor imports (until its hooks unpickle)"] == 2.0
    assert phases["controller imports and init"] == 2.0
    assert phases["worker imports (until its callback unpickles)"] == 2.0
    assert phases["data and model set-up in the worker"] == 1.0
    assert list(tune_summary.startup_cpu(events, "a").values()) == [2.5, 3.0, 6.0]
    assert tune_summary.startup_breakdown(events[2:], "a", 0.0, 13.0) is None  # no trial actor mark


def test_host_memory_runs_each_setting_in_a_fresh_process_and_records_it(tmp_path):
    out = tmp_path / "host_memory.json"
    tiny = ["--batch-size", "2", "--height", "32", "--width", "32", "--repeats", "1", "--warmup", "0"]
    payload = host_memory.main(
        ["--models", "resnet_ours_tiny", "--rounds", "1", "--threads", "1", *tiny, "--out", str(out)]
    )
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(payload["results"]))
    kept, default = (
        payload["results"]["resnet_ours_tiny, kept"],
        payload["results"]["resnet_ours_tiny, glibc default"],
    )
    assert len(kept["runs"]) == len(default["runs"]) == 1
    assert kept["median_s"] > 0 and default["speedup_over_glibc_default"] == 1.0
    assert payload["ratios"] == {}  # resnet50 not measured
