"""`raylung report` on the session's smoke tune: every section, self-contained, escaped, and
rendered by a real headless Chromium (that part skips where /usr/bin/chromium is absent)."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from raylung.cli.report_cmd import register
from raylung.experiment import Experiment
from raylung.report.figures import draw
from raylung.report.html import SECTIONS, SYNTHETIC_BANNER, fmt, render
from raylung.report.importance import param_importance
from raylung.report.sections import gather

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1280, 4000)
N_BOOT = 50
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a group, so `report` stays a subcommand as in `raylung report`
        pass

    register(app)
    return app


@pytest.fixture(scope="module")
def page(smoke, tmp_path_factory) -> tuple[Path, str]:
    """The smoke experiment's report, made through the CLI."""
    out = tmp_path_factory.mktemp("report") / "smoke report.html"
    result = CliRunner().invoke(
        _cli(), ["report", str(smoke.experiment.local), "--out", str(out), "--n-boot", str(N_BOOT)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert str(out) in result.output.replace("\n", "")
    return out, out.read_text(encoding="utf-8")


class _Doc(HTMLParser):
    """Sections (id -> their text and tags), img sources and trial rows of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.section: str | None = None
        self.text: dict[str, list[str]] = {}
        self.images: dict[str, list[str]] = {}
        self.trial_rows: list[tuple[str, str]] = []  # (data-trial, class)
        self.ids: list[str] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
        if tag in ("section", "header") and a.get("id"):
            self.section = a["id"]
        if tag == "img":
            self.images.setdefault(self.section or "", []).append(a.get("src") or "")
        if tag == "tr" and "data-trial" in a:
            self.trial_rows.append((a["data-trial"], a.get("class") or ""))
        self._in_heading = tag in ("h1", "h2")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2"):
            self._in_heading = False

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self.headings.append(data.strip())
        self.text.setdefault(self.section or "", []).append(data)

    def section_text(self, section_id: str) -> str:
        return " ".join(" ".join(self.text.get(section_id, [])).split())


def _parse(text: str) -> _Doc:
    doc = _Doc()
    doc.feed(text)
    return doc


def test_the_page_has_every_section_in_order_with_its_heading(page):
    _, text = page
    doc = _parse(text)
    ids = [i for i in doc.ids if i in SECTIONS]
    assert ids == list(SECTIONS), ids
    assert "overview" in doc.ids
    assert doc.headings[0].startswith("raylung experiment report: smoke-")
    assert doc.headings[1:] == list(SECTIONS.values())
    overview = doc.section_text("overview")
    for fact in ("raylung version 0.1.0", "data root", "report generated", "search started"):
        assert fact in overview, overview


def test_the_page_is_self_contained(page):
    _, text = page
    assert not EXTERNAL.findall(text), EXTERNAL.findall(text)[:3]
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text
    assert '<link rel="stylesheet"' not in text
    sources = [src for srcs in _parse(text).images.values() for src in srcs]
    assert len(sources) >= 5  # trial curves, best trial curves, importance, confusion matrix, ROC
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and min(image.size) > 50


def test_the_trials_table_has_one_row_per_trial_and_marks_the_best(page, smoke):
    _, text = page
    rows = _parse(text).trial_rows
    assert sorted(r[0] for r in rows) == sorted(t.trial_id for t in smoke.trials)
    best = [trial for trial, cls in rows if "best" in cls]
    assert best == [smoke.best["trial_id"]]
    for trial in smoke.trials:
        row = re.search(rf'<tr data-trial="{trial.trial_id}"[^>]*>(.*?)</tr>', text).group(1)
        assert f'class="status status-{trial.status}"' in row
        assert fmt(trial.best_value, 4) in row and f'<td class="num">{trial.epochs}</td>' in row


def test_the_best_trials_pipeline_and_every_trials_model_as_built_are_shown(page, smoke):
    _, text = page
    pipeline = smoke.best["pipeline"]
    model = re.search(r'<span id="best-model">(.*?)</span>', text).group(1)
    assert pipeline["model"]["fingerprint"] in model and f"{pipeline['model']['params']:,}" in model
    augment = re.search(r'<span id="best-augment">(.*?)</span>', text).group(1)
    assert augment == (", ".join(f"{k} p={v:.2g}" for k, v in pipeline["augment"].items()) or "none")
    for trial in smoke.trials:
        row = re.search(rf'<tr data-trial="{trial.trial_id}"[^>]*>(.*?)</tr>', text).group(1)
        assert trial.pipeline["model"]["fingerprint"] in row


def test_the_synthetic_banner_shows_at_the_top(page):
    _, text = page
    doc = _parse(text)
    assert SYNTHETIC_BANNER in doc.section_text("overview")
    assert text.index('id="synthetic-banner"') < text.index('id="search-space"')


def test_the_search_space_lists_every_parameter_with_its_condition(page):
    _, text = page
    space = _parse(text).section_text("search-space")
    for parameter in ("data.augment.policy", "model.eca_k", "model.stem_channels", "train.lr",
                      "data.augment.intensity_jitter"):  # fmt: skip
        assert parameter in space
    assert "loguniform [0.0001, 0.01]" in space
    assert "data.augment.policy in ['custom']" in space


def test_parameter_importance_is_optunas(page, smoke):
    _, text = page
    doc = _parse(text)
    importance = param_importance(smoke.experiment)
    section = doc.section_text("param-importance")
    if importance.values:
        assert len(doc.images.get("param-importance", [])) == 1
        for name, value in importance.values.items():
            assert name in section and fmt(value) in section
        assert abs(sum(importance.values.values()) - 1.0) < 1e-6
    else:  # fewer than two completed trials in the study: a note says so
        assert importance.notes and importance.notes[0] in section
    assert "intensity_jitter" not in importance.values  # conditional: not in every trial


def test_test_metrics_match_the_evaluation_they_come_from(page, smoke):
    _, text = page
    local = smoke.experiment.local
    retrains = sorted(local.glob("retrain-*/test/metrics.json"))
    metrics_file = retrains[-1] if retrains else local / "report" / "test" / "metrics.json"
    document = json.loads(metrics_file.read_text())
    if not retrains:
        assert document["confidence"]["n_boot"] == N_BOOT
    doc = _parse(text)
    section = doc.section_text("test-metrics")
    for key, value in document["metrics"].items():
        assert fmt(value) in section, key
    for key, (low, high) in document["confidence_intervals"].items():
        assert f"{fmt(low)} – {fmt(high)}" in section, key
    assert f"{document['n']} test images" in section
    matrix = document["confusion_matrix"]
    assert sum(matrix.values()) == document["n"]
    assert len(doc.images.get("confusion-matrix", [])) == 1 and len(doc.images.get("roc", [])) == 1
    per_subclass = doc.section_text("per-subclass")
    for name, row in document["per_subclass"].items():
        assert name in per_subclass and fmt(row["accuracy"]) in per_subclass


def test_explainability_shows_figures_or_says_why_not(page, smoke):
    _, text = page
    doc = _parse(text)
    section = doc.section_text("explainability")
    try:
        from raylung.explain import explain_test_sample  # noqa: F401
    except ImportError:
        assert "raylung.explain is not available" in section
        assert not doc.images.get("explainability")
        return
    local = smoke.experiment.local
    pngs = list(local.glob("retrain-*/explain/*.png")) + list((local / "report" / "explain").glob("*.png"))
    shown = doc.images.get("explainability", [])
    assert pngs and 0 < len(shown) <= len(pngs), section


def test_text_from_the_experiment_is_escaped(smoke):
    data = gather(smoke.experiment, n_boot=N_BOOT, explain=False)
    hostile = '<img src="https://evil.example/x.png" onerror="alert(1)">'
    data.trials[0].error = hostile
    data.trials[0].status = "error"
    data.trials[0].params["train.lr"] = hostile
    text = render(data, draw(data))
    assert hostile not in text and "&lt;img src=&quot;https://evil.example/x.png&quot;" in text
    assert not EXTERNAL.findall(text)


def test_the_cli_refuses_a_missing_directory(tmp_path):
    result = CliRunner().invoke(_cli(), ["report", str(tmp_path / "nope")])
    assert result.exit_code != 0
    assert "not a directory" in str(result.exception)


def test_importance_notes_when_the_study_is_too_small(tmp_path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    experiment = Experiment(str(tmp_path), "tiny")
    experiment.local.mkdir()
    study = optuna.create_study(study_name="tiny", storage=experiment.optuna_url)
    study.optimize(lambda t: t.suggest_float("train.lr", 1e-4, 1e-2, log=True), n_trials=1)
    importance = param_importance(experiment)
    assert importance.values == {} and "only 1 completed trial" in importance.notes[0]

    study.optimize(lambda t: t.suggest_float("train.lr", 1e-4, 1e-2, log=True), n_trials=3)
    importance = param_importance(experiment)
    assert importance.values == {"train.lr": 1.0}
    assert any("only one parameter" in n for n in importance.notes)

    assert "no Optuna study" in param_importance(Experiment(str(tmp_path), "absent")).notes[0]


# --- a real browser -----------------------------------------------------------------------


def _chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="raylung-chromium-") as profile:
        return subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="/usr/bin/chromium absent (run .ci/install-chromium.sh)")
def test_headless_chromium_renders_every_section(page, tmp_path):
    path, _ = page
    screenshot = tmp_path / "report.png"
    shot = _chromium(f"--screenshot={screenshot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", path.as_uri())
    assert screenshot.is_file(), shot.stderr[-2000:]
    assert screenshot.stat().st_size > 50_000
    with Image.open(screenshot) as image:
        assert image.size == WINDOW
        pixels = np.asarray(image.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 200, len(colours)  # text, plots and the banner, not a blank page
    # the red synthetic banner is drawn near the top
    top = pixels[: WINDOW[1] // 8]
    red = (top[..., 0] > 150) & (top[..., 1] < 70) & (top[..., 2] < 70)
    assert red.sum() > 5_000, red.sum()

    dom = _chromium("--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section_id in ("overview", "synthetic-banner", *SECTIONS):
        assert f'id="{section_id}"' in dom.stdout, section_id
    assert dom.stdout.count("data:image/png;base64,") >= 5
