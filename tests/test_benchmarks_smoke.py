"""Fast checks of the benchmark scripts' argument parsing and pure helpers (no Ray started).

The benchmarks themselves take minutes; here their arithmetic, their timeline bookkeeping,
the suite's summary writer and ``gpu.py --dry-run`` (CPU, tiny images) are checked on their own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import gpu  # noqa: E402
import run_all  # noqa: E402
import train_overhead  # noqa: E402
import tune_overhead  # noqa: E402

# --- train_overhead -------------------------------------------------------------------------


def test_train_overhead_flags_pick_and_override_the_plan():
    assert train_overhead.parse_args([]).plan == train_overhead.Plan()
    quick = train_overhead.parse_args(["--quick", "--epochs", "3", "--image-size", "96", "64"]).plan
    assert quick.overhead_epochs == 3 and quick.image_size == (96, 64)
    assert quick.scaling_epochs == train_overhead.QUICK.scaling_epochs
    assert quick.train_images == 4 * quick.per_subclass
    with pytest.raises(SystemExit):
        train_overhead.parse_args(["--batch-size", "15"])


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
        *span("train_fn_start", 5.5, 5.5),
        *span("train_epoch", 6.0, 16.0),
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
            ("train_epoch", "begin", 0.5),
            ("train_epoch", "end", 10.5),
            ("validate", "begin", 10.5),
            ("validate", "end", 11.5),
            ("checkpoint_save", "begin", 11.5),
            ("checkpoint_save", "end", 12.0),
        )
    ]
    ray_run = train_overhead.summarize_run(events, "r", 100.0, 119.5)
    assert ray_run["startup_s"] == pytest.approx(5.5) and ray_run["setup_s"] == pytest.approx(0.5)
    assert ray_run["train_s"] == pytest.approx(10.0) and ray_run["report_s"] == pytest.approx(0.5)
    assert ray_run["report_wait_s"] == pytest.approx(0.2) and ray_run["teardown_s"] == pytest.approx(1.5)
    assert ray_run["other_s"] == pytest.approx(0.0, abs=1e-9)
    assert sum(ray_run["startup_phases_s"].values()) == pytest.approx(ray_run["startup_s"])
    assert ray_run["teardown_phases_s"]["until the controller sees the end"] == pytest.approx(0.5)

    plain = train_overhead.summarize_run(events, "plain", 200.0, 212.0)
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
    assert train_overhead.steady_images_per_s(history) == pytest.approx(200 / 6)
    assert train_overhead.scaling({"images_per_s": 10.0}, {"images_per_s": 18.0}) == pytest.approx(
        {"speedup": 1.8, "efficiency": 0.9, "met": True}
    )


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
    split = train_overhead.summarize_split(ranks, 16)
    assert split["speedup_ddp"] == pytest.approx((16 / 0.15) / 80)
    product = 2 * split["batch_effect"] * split["machine_ceiling"] * split["sync_cost"]
    assert product == pytest.approx(split["speedup_ddp"])
    assert split["exposed_allreduce_s"] == pytest.approx(0.01) and split["allreduce_flat_s"] == 0.004


def test_timeline_callback_and_loop_instrumentation_record_spans(tmp_path):
    path = tmp_path / "timeline.jsonl"
    timeline = train_overhead.Timeline(str(path))
    timeline.after_controller_start(SimpleNamespace(run_config=SimpleNamespace(name="run-1")))
    assert timeline.before_init_train_context([]) == {}
    with timeline.on_report(), timeline.on_checkpoint_transfer():
        pass
    calls = []
    loop = SimpleNamespace(
        **{name: (lambda name=name: calls.append(name) or name) for name in train_overhead.LOOP_PHASES}
    )
    train_overhead.instrument_loop(lambda e, p: train_overhead.record(path, e, p, run="run-1", rank=0), loop)
    train_overhead.instrument_loop(lambda e, p: None, loop)  # a second run only swaps the recorder
    assert loop.train_one_epoch() == "train_one_epoch" and calls == ["train_one_epoch"]
    train_overhead.instrument_loop(lambda e, p: train_overhead.record(path, e, p, run="run-1", rank=0), loop)
    loop.quiet_ray_train_reports()
    events = train_overhead.read_events(path)
    assert [e["event"] for e in events if e["phase"] == "at"] == ["controller_start", "workers_created"]
    assert len(train_overhead.spans(events, "run-1", "report", rank=None)) == 1
    assert len(train_overhead.spans(events, "run-1", "checkpoint_upload", rank=None)) == 1
    assert len(train_overhead.spans(events, "run-1", "train_fn_start", rank=0)) == 1
    assert train_overhead.spans(events, "run-1", "train_epoch", rank=0) == []  # recorded by the no-op


def test_the_training_loop_calls_the_instrumented_names_as_module_globals():
    """instrument_loop times the loop by replacing these module attributes, which only works
    while train_loop_per_worker calls them by their bare names (parsed, not imported: fast)."""
    import ast

    source = (BENCH_DIR.parent / "raylung" / "train" / "loop.py").read_text()
    tree = ast.parse(source)
    loop_fn = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train_loop_per_worker"
    )
    called = {
        n.func.id for n in ast.walk(loop_fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert set(train_overhead.LOOP_PHASES) <= called
    first = next(n for n in loop_fn.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call))
    assert first.value.func.id == "quiet_ray_train_reports"  # its start marks the function's start


def test_cpu_meter_counts_a_child_process_that_exits_inside_the_block():
    import subprocess

    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    with train_overhead.CpuMeter(interval_s=0.05) as meter:
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


def test_summarize_tune_counts_overhead_start_up_and_concurrency():
    clocks = {
        "a": {"start": 0.0, "first_result": 12.0, "complete": 20.0},
        "b": {"start": 1.0, "first_result": 13.0, "complete": 22.0},
        "c": {"start": 20.0, "first_result": 30.0, "complete": 36.0},
    }
    histories = {t: [{"epoch_time_s": 2.0}, {"epoch_time_s": 2.0}] for t in clocks}
    events = [
        {"event": "validate", "phase": p, "t": t, "run": "a", "rank": 0}
        for p, t in (("begin", 14.0), ("end", 14.5), ("begin", 17.0), ("end", 17.5))
    ]
    events += [
        {"event": "train_epoch", "phase": p, "t": t, "run": "a", "rank": 0}
        for p, t in (("begin", 10.0), ("end", 12.0))
    ]
    result = tune_overhead.summarize_tune(clocks, histories, events, 40.0, {"run": 38.0}, 5.0)
    assert result["concurrency"] == 2 and result["n_trials"] == 3
    a = next(t for t in result["trials"] if t["trial_id"] == "a")
    assert a["overhead_s"] == pytest.approx(20.0 - 4.0 - 1.0) and a["startup_s"] == pytest.approx(10.0)
    assert a["startup_raw_s"] == pytest.approx(10.0)
    assert result["experiment_overhead_per_trial_s"] == pytest.approx((2 * 40.0 - 12.0 - 1.0) / 3)
    ours = {**result, "tune_wall_s": 40.0}
    slower = {**result, "tune_wall_s": 50.0, "phases_s": {"run": 47.5}}
    comparison = tune_overhead.compare(
        {tune_overhead.RAYLUNG_INTERVAL: ours, tune_overhead.RAY_DEFAULT_INTERVAL: slower}
    )
    assert comparison["tune_wall_ratio"] == pytest.approx(1.25) and comparison[
        "tuner_run_ratio"
    ] == pytest.approx(1.25)
    assert tune_overhead.compare({tune_overhead.RAYLUNG_INTERVAL: ours}) is None


def test_overlap_counts_intervals_open_at_once():
    assert tune_overhead.overlap([(0, 2), (1, 3), (2, 4)]) == 2  # one ends as the next starts
    assert tune_overhead.overlap([(0, 5), (1, 2), (1.5, 3)]) == 3
    assert tune_overhead.overlap([]) == 0


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
            "scaling": {
                "runs": {"1": {"images_per_s": 50.0}, "2": {"images_per_s": 90.0}},
                "speedup": 1.8,
                "efficiency": 0.9,
            },
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
    assert bench["train_overhead"]["ratios"]["scaling efficiency"] == 0.9
    assert bench["tune_overhead"]["ratios"]["2 s vs 0.25 s health check: tune_wall_ratio"] == 1.3
    assert "rows" not in bench["broken"] and bench["broken"]["status"] == "failed (exit 1)"
    assert "summary_error" in run_all.build_summary(runs_bad, machine)["benchmarks"]["data_loading"]

    markdown = md_path.read_text()
    for name in ("model_step", "data_loading", "train_overhead", "tune_overhead", "broken"):
        assert f"## {name}" in markdown
    assert "| resnet_ours50 | 24 | 4 | 1.25 | 2 |" in markdown
    assert "| overhead (wall difference / Ray wall) | 0.074 |" in markdown
    assert "cpu_count 2" in markdown


def test_run_all_runs_each_benchmark_with_its_short_flags(tmp_path):
    args = run_all.parse_args(["--skip", "model_step", "data_loading"])
    assert args.names == ["train_overhead", "tune_overhead"]
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
    assert gpu.peak_tflops(name)[0] == peak
    assert gpu.peak_tflops(name, override=123.0) == (123.0, "--peak-tflops")


def test_gpu_plan_puts_eager_bf16_channels_last_first_and_compile_last_within_budget():
    plan = gpu.build_plan(["resnet_ours50", "resnet50"], [8, 32, 64, 128], [64])
    assert len(plan) == 2 * 4 * 4 + 1 + 2
    plain = [c for c in plan if c.mode == "plain"]  # kernels off: only for ResNet-ours, in fp32
    assert [(c.model, c.batch, c.precision) for c in plain] == [("resnet_ours50", 64, "fp32")]
    assert (plan[0].precision, plan[0].layout, plan[0].mode) == ("bf16", "channels_last", "eager")
    assert [c.model for c in plan[:2]] == ["resnet_ours50", "resnet50"]
    assert all(c.mode == "compile" for c in plan[-2:]) and len({c.label for c in plan}) == len(plan)
    assert len(gpu.build_plan(["m"], [8], [8], compile_=False)) == 4
    compile_case, eager_case = plan[-1], plan[0]
    assert gpu.may_start(eager_case, 290, 300) and not gpu.may_start(compile_case, 290, 300)
    assert not gpu.may_start(eager_case, 301, 300)
    assert gpu.mfu(1000.0, 30.0, 100.0) == pytest.approx(0.3) and gpu.mfu(1.0, 1.0, None) is None


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
    assert len(rows) == 4 + 1 + 1 and saved["peak_bf16_tflops"] == 1.0 and saved["config"]["height"] == 32
    assert rows[-2]["mode"] == "plain" and rows[-2]["status"] == "ok"
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
    summary = gpu.summarize(rows)
    assert summary["best"]["a"]["mode"] == "compile" and summary["best"]["b"]["images_per_s"] == 600.0
    ratios = {(s["model"], s["switch"]): s["ratio"] for s in summary["speedups"]}
    assert ratios[("a", "bf16 / fp32 (contiguous)")] == pytest.approx(2.5)
    assert ratios[("a", "compile / eager (bf16 channels_last)")] == pytest.approx(1.2)
    assert ratios[("b", "bf16 channels_last / fp32 contiguous")] == pytest.approx(3.0)
    assert ("b", "channels_last / contiguous (bf16)") not in ratios  # its contiguous run ran out of memory
    assert summary["a / b images/s (median over configs)"] == pytest.approx(0.5)
