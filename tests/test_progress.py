"""Progress bars: the shared builder's modes, and what each long command counts.

Captured output is not a terminal, so under the default ``RAYLUNG_PROGRESS=auto`` every bar
states its tasks once when it closes ("decoding images: 1000/1000 in 0.4 s"); that is what
these tests read. Durations are never asserted.
"""

from __future__ import annotations

import re
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
from data_factory import make_folder_tree
from typer.testing import CliRunner

from raylung.config import DataConfig, RaylungConfig
from raylung.progress import ENV_VAR, progress_bar

SIZE = (32, 24)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _count(output: str, description: str) -> str | None:
    """The ``done/total`` of `description`'s summary line in `output`, if there is one."""
    found = re.search(rf"^{re.escape(description)}: (\d+/\d+) in \d+\.\d s$", output, re.M)
    return found.group(1) if found else None


@pytest.fixture(autouse=True)
def auto_mode(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "auto")


def _three_steps(**kwargs) -> None:
    with progress_bar(**kwargs) as bar:
        task = bar.add_task("steps", total=3)
        for _ in range(3):
            bar.advance(task)


# --- the builder ----------------------------------------------------------------------------


def test_not_a_terminal_states_each_task_once_when_done(capsys):
    _three_steps()
    captured = capsys.readouterr()
    assert _count(captured.err, "steps") == "3/3" and captured.out == ""


def test_always_draws_the_bar_even_when_captured(monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, "always")
    _three_steps()
    err = capsys.readouterr().err
    assert "3/3" in err and "\x1b[" in err  # a rendered frame, with the terminal's escapes
    assert _count(err, "steps") is None


@pytest.mark.parametrize("how", ["never", "disabled", "ray worker"])
def test_never_disabled_or_inside_a_ray_worker_is_silent(monkeypatch, capsys, how):
    if how == "never":
        monkeypatch.setenv(ENV_VAR, "never")
    if how == "ray worker":
        monkeypatch.setenv(ENV_VAR, "always")
        worker = types.SimpleNamespace(global_worker=types.SimpleNamespace(mode=1))  # ray's WORKER_MODE
        monkeypatch.setitem(sys.modules, "ray._private.worker", worker)
    _three_steps(enabled=how != "disabled")
    assert capsys.readouterr().err == ""


def test_an_unknown_mode_warns_and_means_auto(monkeypatch, capsys, caplog):
    monkeypatch.setenv(ENV_VAR, "sometimes")
    _three_steps()
    assert _count(capsys.readouterr().err, "steps") == "3/3"
    assert "RAYLUNG_PROGRESS='sometimes'" in caplog.text


def test_a_bar_inside_a_bar_shares_its_console_and_an_error_states_nothing(capsys):
    with progress_bar() as outer:
        task = outer.add_task("outer", total=1)
        with progress_bar() as inner:
            assert inner.console is outer.console
            inner.add_task("inner", total=2, completed=2)
        outer.advance(task)
    err = capsys.readouterr().err
    assert _count(err, "inner") == "2/2" and _count(err, "outer") == "1/1"
    assert err.index("inner") < err.index("outer")
    with pytest.raises(RuntimeError), progress_bar() as bar:
        bar.add_task("failed", total=2)
        raise RuntimeError
    assert capsys.readouterr().err == ""


# --- the commands ---------------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize("mode", ["auto", "always"])
def test_data_check_on_lc25000_counts_every_image(lc25000_root: Path, monkeypatch, mode):
    from raylung.cli.main import app

    monkeypatch.setenv(ENV_VAR, mode)
    result = CliRunner().invoke(app, ["data", "check", "--root", str(lc25000_root)])
    assert result.exit_code == 0, result.output
    assert "no leakage found" in result.output
    if mode == "auto":
        assert _count(result.output, "decoding images") == "1000/1000"
    else:
        assert "1000/1000" in result.output and _count(result.output, "decoding images") is None


def test_the_image_cache_build_counts_its_images(tmp_path: Path, capsys):
    from raylung.data import ImageCache, discover

    root = make_folder_tree(tmp_path / "d", {"cancer": 3, "non_cancer": 4}, copies=1)
    cfg = DataConfig(root=root, cache_dir=tmp_path / "cache", image_size=SIZE)
    paths = [s.path for s in discover(cfg)]
    assert ImageCache(cfg).build(paths, progress=True).built == len(paths) == 7
    assert _count(capsys.readouterr().err, "caching images") == "7/7"
    assert ImageCache(cfg).build(paths).reused == 7  # as in a training worker: no bar
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    from model_factory import make_checkpoint

    from raylung.artifacts.export import export_checkpoint
    from raylung.config.schema import ExportConfig

    tmp = tmp_path_factory.mktemp("progress")
    checkpoint, _, _ = make_checkpoint(tmp)
    return export_checkpoint(checkpoint, tmp / "export", formats=[], settings=ExportConfig(calibrate=False))


def test_evaluate_counts_the_images_it_scores(export: Path, tmp_path: Path, capsys):
    from raylung.artifacts.evaluate import evaluate

    report = evaluate(export, "test", out_dir=tmp_path / "eval", n_boot=0, device="cpu")
    assert _count(capsys.readouterr().err, "scoring images") == f"{report.n}/{report.n}"
    evaluate(export, "test", out_dir=tmp_path / "quiet", n_boot=0, device="cpu", progress=False)
    assert capsys.readouterr().err == ""


def test_a_first_evaluation_with_a_cache_counts_the_images_it_caches(export: Path, tmp_path: Path, capsys):
    import torch

    from raylung.artifacts.evaluation_data import score_samples, split_samples
    from raylung.artifacts.loader import load_export

    loaded = load_export(export)
    data = loaded.config.data.model_copy(update={"cache": True, "cache_dir": tmp_path / "cache"})
    loaded = replace(loaded, config=loaded.config.model_copy(update={"data": data}))
    samples, _ = split_samples(loaded, "test", None, None)
    score_samples(loaded, samples, 4, torch.device("cpu"), progress=True)
    err = capsys.readouterr().err
    n = len(samples)
    assert _count(err, "caching images") == _count(err, "scoring images") == f"{n}/{n}"


def test_predict_counts_images_with_time_left(export: Path, tmp_path: Path, capsys, monkeypatch):
    from raylung.artifacts.loader import load_export
    from raylung.artifacts.predict import predict

    images = Path(load_export(export).config.data.root)
    summary = predict(export, [images], tmp_path / "p.csv", device="cpu")
    n = summary.n_found
    assert _count(capsys.readouterr().err, "predicting images") == f"{n}/{n}"
    monkeypatch.setenv(ENV_VAR, "always")
    predict(export, [images], tmp_path / "q.csv", device="cpu")
    frame = capsys.readouterr().err
    assert f"{n}/{n}" in frame and re.search(r"\d:\d\d:\d\d", frame)  # count and time (left, then taken)


def test_tiling_counts_slides(tmp_path: Path, capsys):
    from slide_factory import make_slides

    from raylung.slides.tiler import TileSpec
    from raylung.slides.tiling import tile_slides

    slides = make_slides(tmp_path / "slides", cancer_slides=1, normal_slides=1)
    tile_slides(slides, tmp_path / "tiles", TileSpec(size=(64, 48)))
    assert _count(capsys.readouterr().err, "tiling slides") == "2/2"


def test_benchmark_runs_are_counted_as_tune_finishes_them(capsys):
    import ray.cloudpickle as pickle

    from raylung.benchmark.progress import RunsDone

    with progress_bar() as bar:
        task = bar.add_task("benchmark runs", total=3)
        done = RunsDone(bar, task)
        done.on_trial_complete(0, [], object())
        done.on_trial_error(1, [], object())
        copy = pickle.loads(pickle.dumps(done))  # Tune keeps its callbacks in tuner.pkl
        assert copy.bar is None and copy.task == task
        copy.on_trial_complete(2, [], object())  # a restored copy advances nothing
        done.on_trial_complete(2, [], object())
    assert _count(capsys.readouterr().err, "benchmark runs") == "3/3"


def test_report_counts_its_parts(tmp_path: Path, capsys):
    from raylung.report import build_report
    from raylung.report.build import REPORT_STEPS

    experiment = tmp_path / "exp"
    experiment.mkdir()
    (experiment / "base_config.json").write_text(RaylungConfig().model_dump_json())
    assert build_report(experiment, explain=False).is_file()
    assert _count(capsys.readouterr().err, "report sections") == f"{len(REPORT_STEPS)}/{len(REPORT_STEPS)}"


def test_training_progress_states_epochs_and_prints_metrics(capsys):
    from raylung.train.progress import ProgressDisplay, StepUpdate

    class NoQueue:
        def qsize(self) -> int:
            return 0

    with ProgressDisplay(NoQueue()) as display:
        for epoch in (1, 2):
            display._show("step", StepUpdate(epoch, 2, 5, 5, 0.5, 10.0))
            display._show("epoch", {"epoch": epoch, "train_loss": 0.5, "val_loss": 0.4})
    err = capsys.readouterr().err
    assert "epoch 2: train_loss 0.5000  val: loss 0.4000" in err
    assert _count(err, "epochs") == "2/2"
