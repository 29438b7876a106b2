"""Evaluate an exported (or checkpointed) model on one split of its run's splits file.

One process, no Ray: the split is small next to training, and a report should not need a
cluster. Metrics treat cancer as the positive class (the paper's eqs. 4-7); 95% confidence
intervals come from a percentile bootstrap that resamples whole groups (tile, slide or
patient), because images of one group are correlated. Results on raylung's synthetic demo
data are stamped as such in the JSON and in every plot title.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from raylung.artifacts.inference import Predictions, predict_shard
from raylung.artifacts.loader import LoadedModel, inference_device, load_export, to_json
from raylung.artifacts.metrics import Confusion, binary_metrics, bootstrap_intervals, roc_curve
from raylung.artifacts.precision import Precision
from raylung.data import LungDataset, Sample, SplitSet, is_synthetic, worker_init_fn
from raylung.data.files import MAX_LISTED
from raylung.data.naming import LABEL_NAMES, split_name
from raylung.errors import ConfigError, DataError
from raylung.plots import confusion_matrix_plot, roc_plot

log = logging.getLogger(__name__)

SYNTHETIC_STAMP = "synthetic demo data"
CI_LEVEL = 0.95
FILES = {
    "metrics": "metrics.json",
    "predictions": "predictions.csv",
    "confusion_matrix": "confusion_matrix.png",
    "roc": "roc.png",
}


@dataclass(frozen=True)
class SubclassResult:
    """Metrics of one subclass; `rate` is recall for an all-cancer subclass, specificity for an
    all-non-cancer one (`rate_name` says which), and None for a subclass holding both labels."""

    name: str
    n: int
    label: str  # "cancer", "non_cancer" or "mixed"
    accuracy: float
    rate_name: str | None
    rate: float | None
    mean_probability: float


@dataclass
class EvaluationReport:
    """What :func:`evaluate` computed and where it wrote it."""

    model: str
    model_path: Path
    split: str
    splits_file: str
    n: int
    n_groups: int
    threshold: float
    metrics: dict[str, float]  # accuracy, precision, recall, f1, auroc, loss
    intervals: dict[str, tuple[float, float]]  # 95% CI per metric (not loss); empty if n_boot=0
    n_boot: int
    confusion: Confusion
    per_subclass: list[SubclassResult]
    synthetic: bool
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        c = self.confusion
        document: dict[str, Any] = {
            "model": self.model,
            "model_path": str(self.model_path),
            "split": self.split,
            "splits_file": self.splits_file,
            "synthetic_data": self.synthetic,
            "n": self.n,
            "n_groups": self.n_groups,
            "positive_class": "cancer",
            "threshold": self.threshold,
            "metrics": self.metrics,
            "loss": "unweighted binary cross-entropy of the logits",
            "confidence_intervals": {k: list(v) for k, v in self.intervals.items()},
            "confidence": {
                "level": CI_LEVEL,
                "method": "percentile bootstrap, resampling whole groups (Sample.group)",
                "n_boot": self.n_boot,
            },
            "confusion_matrix": {"tn": c.tn, "fp": c.fp, "fn": c.fn, "tp": c.tp},
            "per_subclass": {
                s.name: {k: v for k, v in asdict(s).items() if k != "name"} for s in self.per_subclass
            },
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }
        if self.synthetic:
            document = {"note": f"{SYNTHETIC_STAMP}: results mean nothing clinically", **document}
        return document


def _samples(
    loaded: LoadedModel, split: str, splits_file: str | Path | None, data_root: Path | None
) -> tuple[list[Sample], str]:
    """The split's samples, with paths moved from the run's data root to `data_root` if given."""
    data = loaded.config.data
    location = str(splits_file) if splits_file is not None else data.splits_file
    if not location:
        raise DataError(f"the config of {loaded.path} names no data.splits_file; pass a splits file")
    wanted = split_name(split)
    if wanted is None:
        raise ConfigError(f"split {split!r} is not train, validation or test")
    root = Path(data_root).expanduser() if data_root is not None else Path(data.root).expanduser()
    split_set = SplitSet.load(location, root=root)
    if not split_set.get(wanted):
        raise DataError(f"splits file {location} has no {wanted} samples (it has: {', '.join(split_set)})")
    samples = split_set[wanted]
    if data_root is not None:
        samples = [_rebase(s, Path(data.root).expanduser(), root) for s in samples]
    missing = [s.path for s in samples if not Path(s.path).is_file()]
    if missing:
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise DataError(
            f"{len(missing)} image(s) of the {wanted} split are missing: "
            f"{', '.join(missing[:MAX_LISTED])}{more}; "
            "if the data moved, pass its new root (data_root / --data-root)"
        )
    return samples, location


def _rebase(sample: Sample, old_root: Path, new_root: Path) -> Sample:
    """A sample under the run's old root, pointed at the same relative path under `new_root`."""
    try:
        relative = Path(sample.path).resolve().relative_to(old_root.resolve())
    except ValueError:
        return sample
    return replace(sample, path=str(new_root / relative))


def _synthetic(samples: list[Sample]) -> bool:
    """Whether any evaluated image lies inside the synthetic demo set (its marker is at the root)."""
    return any(is_synthetic(folder) for folder in {Path(s.path).parent for s in samples})


def _per_subclass(
    samples: list[Sample], labels: np.ndarray, probs: np.ndarray, threshold: float
) -> list[SubclassResult]:
    names = np.array([s.subclass or "" for s in samples])
    predicted = probs >= threshold
    results = []
    for name in sorted(set(names) - {""}):
        chosen = names == name
        truth, guess = labels[chosen].astype(bool), predicted[chosen]
        accuracy = float(np.mean(truth == guess))
        if truth.all():
            label, rate_name, rate = "cancer", "recall", float(np.mean(guess))
        elif not truth.any():
            label, rate_name, rate = "non_cancer", "specificity", float(np.mean(~guess))
        else:
            label, rate_name, rate = "mixed", None, None
        results.append(SubclassResult(name, int(chosen.sum()), label, accuracy, rate_name, rate,
                                      float(probs[chosen].mean())))  # fmt: skip
    return results


def _predict(
    loaded: LoadedModel, samples: list[Sample], batch_size: int, device: torch.device
) -> tuple[LungDataset, Predictions]:
    data = loaded.config.data
    dataset = LungDataset(samples, data, train=False)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=data.loader_workers,
        worker_init_fn=worker_init_fn if data.loader_workers else None,
    )  # fmt: skip
    model = loaded.model.to(device)
    index, logits, labels = predict_shard(model, loader, Precision(device, None, False))
    order = np.argsort(index)
    return dataset, Predictions(index=index[order], logits=logits[order], labels=labels[order])


def _write_predictions(path: Path, samples: list[Sample], probs: np.ndarray, threshold: float) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "subclass", "group", "probability", "predicted"])
        for sample, prob in zip(samples, probs, strict=True):
            predicted = LABEL_NAMES[int(prob >= threshold)]
            writer.writerow([sample.path, sample.label_name, sample.subclass or "", sample.group,
                             f"{prob:.6f}", predicted])  # fmt: skip


def evaluate(
    model_path: str | Path,
    split: str = "test",
    *,
    splits_file: str | Path | None = None,
    data_root: str | Path | None = None,
    out_dir: str | Path,
    batch_size: int = 32,
    threshold: float = 0.5,
    n_boot: int = 1000,
    device: str | torch.device | None = None,
) -> EvaluationReport:
    """Run the model over `split` and write metrics.json, predictions.csv and two plots.

    Args:
        model_path: an export folder or a training checkpoint folder.
        split: train, validation or test (any spelling :mod:`raylung.data.naming` accepts).
        splits_file: splits CSV (or URI) to read instead of the config's ``data.splits_file``.
        data_root: where the images are now, if they moved since training; paths under the
            run's old root are rebased onto it, and relative paths in the file resolve to it.
        out_dir: folder for the outputs (created).
        batch_size: images per forward pass.
        threshold: probability at or above which an image is called cancer.
        n_boot: bootstrap resamples for the confidence intervals (0 = none).
        device: where to run the model (default: CUDA when present, else CPU).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be within 0..1, got {threshold}")
    if n_boot < 0 or batch_size < 1:
        raise ConfigError(f"n_boot must be >= 0 and batch_size >= 1, got {n_boot} and {batch_size}")
    device = inference_device(device)
    loaded = load_export(model_path)
    loaded.require_binary()
    root = Path(data_root).expanduser() if data_root is not None else None
    samples, location = _samples(loaded, split, splits_file, root)
    dataset, predictions = _predict(loaded, samples, batch_size, device)
    used = [dataset.samples[i] for i in predictions.index]
    labels, probs = predictions.labels, predictions.probs.astype(np.float64)
    groups = np.array([s.group for s in used])

    metrics = binary_metrics(labels, probs, threshold)
    metrics["loss"] = predictions.loss()
    intervals = (
        bootstrap_intervals(labels, probs, threshold, n_boot=n_boot, level=CI_LEVEL, groups=groups)
        if n_boot
        else {}
    )
    report = EvaluationReport(
        model=loaded.config.model.name,
        model_path=loaded.path,
        split=split_name(split) or split,
        splits_file=location,
        n=len(used),
        n_groups=int(np.unique(groups).size),
        threshold=threshold,
        metrics=metrics,
        intervals=intervals,
        n_boot=n_boot,
        confusion=Confusion.from_predictions(labels, probs >= threshold),
        per_subclass=_per_subclass(used, labels, probs, threshold),
        synthetic=_synthetic(used),
        out_dir=Path(out_dir),
        skipped=list(dataset.skipped),
    )
    _write_outputs(report, used, labels, probs)
    return report


def _write_outputs(
    report: EvaluationReport, samples: list[Sample], labels: np.ndarray, probs: np.ndarray
) -> None:
    out = report.out_dir
    out.mkdir(parents=True, exist_ok=True)
    report.files = {key: out / name for key, name in FILES.items()}
    title = f"{report.model}, {report.split} split (n={report.n})"
    if report.synthetic:
        title += f"\n{SYNTHETIC_STAMP.upper()}"
    _write_predictions(report.files["predictions"], samples, probs, report.threshold)
    confusion_matrix_plot(report.confusion.as_matrix(), report.files["confusion_matrix"],
                          f"{title}\nthreshold {report.threshold:g}")  # fmt: skip
    fpr, tpr = roc_curve(labels, probs)
    roc_plot(fpr, tpr, report.metrics["auroc"], report.files["roc"], title)
    report.files["metrics"].write_text(to_json(report.to_dict()))
    log.info("wrote evaluation of %s on %d %s images to %s", report.model, report.n, report.split, out)
