"""One self-contained HTML page: inline CSS, PNGs as base64 data URIs, no script, no links out.

The page must open from an e-mail attachment or an air-gapped share exactly as it was made,
so nothing is fetched: no external CSS, fonts, scripts or images. Plain string building keeps
it free of a template engine; every piece of text from the experiment goes through
:func:`esc`, since trial errors, paths and parameter values are arbitrary strings.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from raylung.report.figures import Figures
from raylung.report.sections import ReportData

SYNTHETIC_BANNER = "synthetic demo data — results mean nothing clinically"
SECTIONS = {  # id -> heading, in page order
    "search-space": "Search space",
    "trials": "Trials",
    "learning-curves": "Learning curves",
    "param-importance": "Parameter importance",
    "test-metrics": "Best model: test metrics",
    "confusion-matrix": "Confusion matrix",
    "roc": "ROC curve",
    "calibration": "Calibration",
    "per-subclass": "Per-subclass metrics",
    "explainability": "Explainability",
}
METRIC_NAMES = {"accuracy": "accuracy", "precision": "precision", "recall": "recall (sensitivity)",
                "specificity": "specificity", "f1": "F1", "auroc": "AUROC", "loss": "loss (BCE)"}  # fmt: skip

CSS = """
:root { --fg:#1d232a; --muted:#5b6570; --line:#d8dde3; --accent:#2f5d8a; --bg:#ffffff; --soft:#f4f6f8; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1180px; margin:0 auto; padding:24px 28px 64px; }
h1 { font-size:26px; margin:0 0 4px; } h2 { font-size:20px; margin:0 0 12px; color:var(--accent); }
h3 { font-size:15px; margin:16px 0 6px; }
section, header.report { border-top:1px solid var(--line); padding:22px 0 10px; }
header.report { border-top:none; }
.banner { background:#b3261e; color:#fff; font-weight:700; font-size:19px; padding:14px 18px;
  border-radius:6px; margin:14px 0; letter-spacing:.02em; text-align:center; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:12px 0; }
dl.facts dt { color:var(--muted); } dl.facts dd { margin:0; overflow-wrap:anywhere; }
nav.toc { background:var(--soft); border-radius:6px; padding:8px 14px; font-size:14px; }
nav.toc a { color:var(--accent); margin-right:14px; text-decoration:none; white-space:nowrap; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; font-size:13.5px; margin:6px 0 12px; }
th, td { border-bottom:1px solid var(--line); padding:5px 10px; text-align:left; vertical-align:top; }
th { background:var(--soft); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
tr.best td { background:#eaf4ea; font-weight:600; }
.status { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; color:#fff; }
.status-completed { background:#2e7d32; } .status-pruned { background:#8d6e00; }
.status-early-stopped { background:#1565c0; } .status-error { background:#b3261e; }
.error { color:#b3261e; font-size:12px; max-width:420px; overflow-wrap:anywhere; }
.note { color:var(--muted); font-size:13.5px; margin:4px 0; }
figure { margin:8px 0 16px; } figure img { max-width:100%; height:auto; border:1px solid var(--line); }
figcaption { color:var(--muted); font-size:13px; }
.stack figure img { width:100%; }  /* explanation strips are wide: one per row, full width */
.pair { display:flex; flex-wrap:wrap; gap:18px; align-items:flex-start; }
footer { color:var(--muted); font-size:12px; border-top:1px solid var(--line); padding-top:10px; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers compactly, lists as JSON, missing or NaN as a dash; the result is escaped."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, float):
        return esc(f"{value:.{digits}f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}")
    if isinstance(value, (list, tuple, dict)):
        return esc(json.dumps(value))
    return esc(value)


def param(value: Any) -> str:
    """A sampled hyperparameter: four significant digits, so a learning rate keeps its value."""
    return esc(f"{value:.4g}") if isinstance(value, float) and math.isfinite(value) else fmt(value)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(png: bytes | Path | None, alt: str, caption: str | None = None) -> str:
    """A <figure> with the PNG inlined; a note when the figure is missing."""
    if isinstance(png, Path):
        png = png.read_bytes() if png.is_file() else None
    if not png:
        return note(f"{alt}: not available")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{data_uri(png)}" alt="{esc(alt)}">{cap}</figure>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, row_attrs: Sequence[str] = ()) -> str:
    """`rows` cells are HTML already (built with :func:`esc`/:func:`fmt`); headers are escaped here."""
    head = "".join(f"<th>{esc(h).replace('.', '.<wbr>')}</th>" for h in header)  # dotted paths may wrap
    body = []
    for i, cells in enumerate(rows):
        attrs = f" {row_attrs[i]}" if i < len(row_attrs) and row_attrs[i] else ""
        body.append(f"<tr{attrs}>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def td(value: Any, *, numeric: bool = False, raw: bool = False) -> str:
    content = value if raw else fmt(value)
    return f'<td class="num">{content}</td>' if numeric else f"<td>{content}</td>"


def section(section_id: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{esc(SECTIONS[section_id])}</h2>{body}</section>'


# --- the sections -----------------------------------------------------------------------


def _header(data: ReportData) -> str:
    h = data.header
    banner = (
        f'<div class="banner" id="synthetic-banner" role="alert">{esc(SYNTHETIC_BANNER)}</div>'
        if h.synthetic
        else ""
    )
    best_text = "none (no trial reported a result)"
    if h.best:
        value = h.best.get("value")
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else "–"
        best_text = f"trial {h.best['trial_id']}: {h.metric} = {shown} at epoch {h.best.get('epoch')}"
    facts = [
        ("experiment", esc(h.name)),
        ("directory", esc(data.experiment.local)),
        ("search started", esc(h.created or "unknown")),
        ("report generated", esc(h.generated)),
        ("raylung version", esc(h.version)),
        ("data root", esc(h.data_root) + (" (synthetic demo data)" if h.synthetic else "")),
        ("search metric", esc(f"{h.metric} ({'lower' if h.mode == 'min' else 'higher'} is better)")),
        ("trials", esc(len(data.trials))),
        ("best trial", esc(best_text)),
        *_best_pipeline_facts(h.best),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    toc = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title in SECTIONS.items())
    return (
        f'<header class="report" id="overview"><h1>raylung experiment report: {esc(h.name)}</h1>{banner}'
        f'<dl class="facts">{dl}</dl><nav class="toc">{toc}</nav></header>'
    )


def _best_pipeline_facts(best: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The best trial's effective pipeline (best.json): what it trained, as built."""
    pipeline = (best or {}).get("pipeline")
    if not pipeline:
        return []
    model = pipeline["model"]
    arch = "; ".join(f"{k} {v}" for k, v in model.get("arch", {}).items())
    model_text = f"{model['name']}, {model['params']:,} parameters, fingerprint {model['fingerprint']}"
    return [
        (
            "best model as built",
            f'<span id="best-model">{esc(model_text)}</span>' + (f"<br>{esc(arch)}" if arch else ""),
        ),
        (
            "best augmentation as built",
            f'<span id="best-augment">{esc(_augment(pipeline["augment"]))}</span>',
        ),
    ]


def _augment(augment: dict[str, float]) -> str:
    return ", ".join(f"{name} p={p:.2g}" for name, p in augment.items()) or "none"


def _space(data: ReportData) -> str:
    if not data.space:
        return section("search-space", note("no space.json in the experiment"))
    rows = [[td(r.parameter), td(r.distribution), td(r.condition)] for r in data.space]
    return section("search-space", table(["parameter", "distribution", "condition"], rows))


def _trials(data: ReportData) -> str:
    if not data.trials:
        return section("trials", note("no results.json: the search has not summarised its trials yet"))
    metric = data.header.metric
    best_id = data.header.best["trial_id"] if data.header.best else None
    # the space's order first (conditions before dependants), then anything only trials name
    named = [r.parameter for r in data.space] + [p for t in data.trials for p in t.params]
    params = list(dict.fromkeys(named))
    rows, attrs = [], []
    for t in data.trials:
        status = f'<span class="status status-{esc(t.status)}">{esc(t.status)}</span>'
        if t.error:
            status += f'<div class="error">{esc(t.error)}</div>'
        cells = [td(esc(t.trial_id) + (" ★" if t.trial_id == best_id else ""), raw=True)]
        values = [t.params.get(p) for p in params]
        cells += [td(param(v), numeric=isinstance(v, (int, float)), raw=True) for v in values]
        pipeline = t.pipeline or {}
        model = pipeline.get("model")
        cells += [
            td(_augment(pipeline["augment"]) if pipeline else "–"),
            td(f"{model['name']} · {model['fingerprint']}" if model else "–"),
        ]
        cells += [td(fmt(t.best_value, 4), numeric=True, raw=True), td(t.best_epoch, numeric=True),
                  td(t.epochs, numeric=True), td(status, raw=True)]  # fmt: skip
        rows.append(cells)
        attrs.append(f'data-trial="{esc(t.trial_id)}"' + (' class="best"' if t.trial_id == best_id else ""))
    counts = Counter(t.status for t in data.trials)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    header = ["trial", *params, "augmentation as built", "model as built", f"best {metric}", "best epoch",
              "epochs run", "status"]  # fmt: skip
    body = (
        note(f"{len(data.trials)} trials: {summary}. pruned = stopped by ASHA; early-stopped = no "
             f"{metric} improvement for `patience` epochs; ★ = best trial.")
        + table(header, rows, row_attrs=attrs)
    )  # fmt: skip
    return section("trials", body)


def _curves(data: ReportData, figures: Figures) -> str:
    best = data.header.best
    parts = [image(figures.trials, "validation metric per epoch for every trial",
                   f"{data.header.metric} per epoch for every trial")]  # fmt: skip
    if best:
        parts.append(
            image(
                figures.best_trial,
                "best trial learning curves",
                f"best trial {best['trial_id']}: train/validation loss and validation metrics",
            )
        )
    if data.retrain_curves is not None:
        parts.append(
            image(
                data.retrain_curves,
                "retrain learning curves",
                f"{data.retrain_curves.parent.parent.name}: the best configuration retrained",
            )
        )
    return section("learning-curves", "".join(parts))


def _importance(data: ReportData, figures: Figures) -> str:
    imp = data.importance
    parts = []
    if imp.values:
        parts.append(image(figures.importance, "parameter importance", imp.method))
        parts.append(table(["parameter", "importance"],
                           [[td(k), td(v, numeric=True)] for k, v in imp.values.items()]))  # fmt: skip
    parts += [note(n) for n in imp.notes]
    return section("param-importance", "".join(parts))


def _test_metrics(data: ReportData) -> str:
    evaluation = data.evaluation
    parts = [note(f"model: {evaluation.source}")]
    if evaluation.note:
        parts.append(note(evaluation.note))
    doc = evaluation.document
    if doc:
        parts.append(note(
            f"{doc.get('n')} test images in {doc.get('n_groups')} groups, positive class "
            f"{doc.get('positive_class', 'cancer')}; 95% intervals, each saying how it was made"
        ))  # fmt: skip
        parts += [note(w) for w in doc.get("warnings", [])]
        # Older evaluations hold one threshold and bootstrap intervals only.
        at_thresholds = doc.get("at_thresholds") or [
            {"threshold": doc.get("threshold"), "source": "", "metrics": doc.get("metrics", {}),
             "confidence_intervals": doc.get("confidence_intervals", {}), "interval_methods": {}}
        ]  # fmt: skip
        for at in at_thresholds:
            metrics, intervals = {**doc.get("metrics", {}), **at["metrics"]}, at["confidence_intervals"]
            rows = []
            for key, label in METRIC_NAMES.items():
                low, high = intervals.get(key) or (None, None)
                ci = f"{fmt(low)} – {fmt(high)}" if low is not None else "–"
                how = at["interval_methods"].get(key, "")
                rows.append(
                    [td(label), td(metrics.get(key), numeric=True), td(ci, numeric=True, raw=True), td(how)]
                )
            parts.append(f"<h3>threshold {fmt(at['threshold'])} {esc(at['source'])}</h3>")
            parts.append(table(["metric", "value", "95% CI", "interval"], rows))
    return section("test-metrics", "".join(parts))


def _confusion(data: ReportData) -> str:
    evaluation = data.evaluation
    matrix = evaluation.document.get("confusion_matrix")
    parts = []
    if matrix:
        rows = [[td("non_cancer"), td(matrix["tn"], numeric=True), td(matrix["fp"], numeric=True)],
                [td("cancer"), td(matrix["fn"], numeric=True), td(matrix["tp"], numeric=True)]]  # fmt: skip
        parts.append(table(["true \\ predicted", "non_cancer", "cancer"], rows))
    parts.append(image(evaluation.image("confusion_matrix.png"), "confusion matrix"))
    return section("confusion-matrix", '<div class="pair">' + "".join(parts) + "</div>")


def _roc(data: ReportData) -> str:
    return section("roc", image(data.evaluation.image("roc.png"), "ROC curve"))


def _calibration(data: ReportData) -> str:
    cal = data.evaluation.document.get("calibration") or {}
    if not cal:
        return section("calibration", note("no calibration record (an evaluation from before calibration)"))
    fitted = f"temperature {fmt(cal.get('temperature'))} (fitted on {cal.get('fitted_on') or 'nothing'})"
    ece = f"ECE {fmt(cal.get('ece_raw'))} raw, {fmt(cal.get('ece_calibrated'))} calibrated"
    brier = f"Brier {fmt(cal.get('brier_raw'))} raw, {fmt(cal.get('brier_calibrated'))} calibrated"
    diagram = image(data.evaluation.image("reliability.png"), "reliability diagram")
    return section("calibration", note(f"{fitted}; on test: {ece}; {brier}") + diagram)


def _per_subclass(data: ReportData) -> str:
    subclasses = data.evaluation.document.get("per_subclass") or {}
    if not data.evaluation.document:
        return section("per-subclass", note("no test evaluation (see above)"))
    if not subclasses:
        return section("per-subclass", note("no per-subclass results (the split names no subclasses)"))
    rows = []
    for name, s in subclasses.items():
        rate = s.get("rate")
        rows.append([
            td(name), td(s.get("label")), td(s.get("n"), numeric=True), td(s.get("accuracy"), numeric=True),
            td(rate if s.get("rate_name") == "recall" else None, numeric=True),
            td(rate if s.get("rate_name") == "specificity" else None, numeric=True),
            td(s.get("mean_probability"), numeric=True),
        ])  # fmt: skip
    header = ["subclass", "label", "n", "accuracy", "recall", "specificity", "mean p(cancer)"]
    explained = note("recall for all-cancer subclasses, specificity for all-non-cancer ones")
    return section("per-subclass", explained + table(header, rows))


def _explain(data: ReportData) -> str:
    ex = data.explanations
    figures = [image(f.path, f"explanation {f.path.stem}", f.caption) for f in ex.figures]
    body = "".join(note(n) for n in ex.notes)
    if figures:
        body = (note("the model's spatial attention per stage and Grad-CAM of the cancer logit, for test "
                     "images picked among true/false positives/negatives (TP, TN, FP, FN)") + body
                + '<div class="stack">' + "".join(figures) + "</div>")  # fmt: skip
    elif not ex.notes:
        body = note("no explanation figures")
    return section("explainability", body)


def render(data: ReportData, figures: Figures) -> str:
    """The whole page as one string."""
    body = "".join([
        _header(data), _space(data), _trials(data), _curves(data, figures), _importance(data, figures),
        _test_metrics(data), _confusion(data), _roc(data), _calibration(data), _per_subclass(data),
        _explain(data),
    ])  # fmt: skip
    footer = f"<footer>raylung {esc(data.header.version)} · generated {esc(data.header.generated)}</footer>"
    title = f"raylung report: {data.header.name}"
    if data.header.synthetic:
        title += " (synthetic demo data)"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}{footer}</main></body></html>\n"
    )
