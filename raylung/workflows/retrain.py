"""`raylung train --best`: retrain a search's best trial, then evaluate it on test and explain it.

The best trial's configuration is resolved exactly as the search resolved it, and the retrain
refuses to start unless it rebuilds the pipeline that trial trained (``best.json``'s record).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from raylung.cluster.connect import RayTarget
from raylung.config import RaylungConfig
from raylung.errors import ConfigError
from raylung.experiment import Experiment
from raylung.extras import has_extra, install_hint
from raylung.plan.effective import EffectivePipeline, effective_pipeline
from raylung.tracking import Tracking, decide_mode
from raylung.train.launcher import RunLocation
from raylung.workflows.train import RUN_NAME, TrainOutcome, run_training, write_config

log = logging.getLogger(__name__)


def retrain_best(
    experiment_dir: str | None,
    storage: str,
    target: RayTarget = RayTarget(),
    *,
    full: bool = False,
    progress: bool = True,
) -> TrainOutcome:
    """Retrain a search's best configuration for the full budget, evaluate on test, export."""
    from raylung.config.loading import trial_config
    from raylung.experiment import latest_experiment
    from raylung.tune.tuner import reload

    experiment = Experiment.at(experiment_dir) if experiment_dir else latest_experiment(storage)
    best = experiment.read_best()
    prepared = reload(experiment)
    # best.json holds decoded config values; resolved exactly as the tune resolved the trial.
    cfg = trial_config(prepared.base, prepared.space, best["params"])
    verify_pipeline(cfg, best)
    if full:
        cfg = _train_on_train_and_validation(cfg, best, experiment)
    wandb_mode = decide_mode(cfg.wandb)  # before the retrain's folder is made
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"retrain-{stamp}"
    directory = experiment.local / name
    directory.mkdir(parents=True)
    # Same split as the search: the retrain is evaluated on the test split no trial has seen.
    write_config(cfg, directory)
    location = RunLocation(experiment.file(name), RUN_NAME)
    return run_training(
        cfg,
        target,
        experiment,
        location,
        directory,
        progress=progress,
        job_type="retrain",
        resume_hint=f"raylung train --output {experiment.file(name)} --resume",
        keep="last" if full else "best",
        after=_test_and_explain,
        wandb_mode=wandb_mode,
    )


def _test_and_explain(outcome: TrainOutcome, run: Tracking) -> None:
    """Evaluate the retrain on the test split no trial has seen, explain a sample, track both."""
    if outcome.export is None:
        return
    from raylung.artifacts.evaluate import evaluate
    from raylung.explain import explain_test_sample

    outcome.evaluation = evaluate(
        outcome.export, "test", out_dir=outcome.directory / "test", update_card=True
    )
    if has_extra("explain"):
        explain_dir = outcome.directory / "explain"
        splits = outcome.config.data.splits_file
        outcome.explanations = list(explain_test_sample(outcome.export, splits, explain_dir))
    else:
        log.warning("test explanations skipped (Grad-CAM): %s", install_hint("explain"))
    run.summary({f"test_{k}": v for k, v in outcome.evaluation.metrics.items()})
    images = {
        name: outcome.evaluation.files[name]
        for name in ("confusion_matrix", "roc", "reliability")
        if name in outcome.evaluation.files
    }
    images.update({f"explain/{p.stem}": p for p in outcome.explanations})
    run.log_images(images)


def verify_pipeline(cfg: RaylungConfig, best: dict[str, Any]) -> None:
    """Refuse to retrain unless `cfg` builds the pipeline the best trial trained (best.json)."""
    recorded = best.get("pipeline")
    if not recorded:
        log.warning("best.json records no pipeline (an older experiment): the retrain is not verified")
        return
    rebuilt = effective_pipeline(cfg)
    expected = EffectivePipeline.from_json(recorded)
    if rebuilt != expected:
        changed = ", ".join(rebuilt.differences(expected))
        raise ConfigError(
            f"the retrain would not train what trial {best.get('trial_id')} trained: {changed} differ "
            f"(recorded pipeline {expected.digest}, rebuilt {rebuilt.digest}). Was the experiment's "
            "base_config.json edited, or raylung's models or augmentations changed since the search?"
        )
    log.info("retrain rebuilds the best trial's pipeline %s", rebuilt.digest)


def _train_on_train_and_validation(cfg: RaylungConfig, best: dict, experiment: Experiment) -> RaylungConfig:
    """--full: fold validation into train and train for the best trial's best epoch count.

    With validation inside the training data there is no honest signal for early stopping or
    for picking an epoch, so the epoch count comes from the search and the last epoch is kept.
    """
    from raylung.data import SplitSet

    splits = SplitSet.load(cfg.data.splits_file)
    merged = SplitSet(
        {
            "train": splits["train"] + splits["validation"],
            "validation": splits["validation"],
            "test": splits["test"],
        }
    )
    path = experiment.file("splits_full.csv")
    merged.save(path)
    data = cfg.data.model_copy(update={"splits_file": path})
    train = cfg.train.model_copy(
        update={"epochs": int(best.get("epoch") or cfg.train.epochs), "patience": None}
    )
    return cfg.model_copy(update={"data": data, "train": train})
