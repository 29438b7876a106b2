"""The one typed configuration of a raylung run.

A training run, a tune and a benchmark all read the same schema: a YAML file is validated
here once, at the edge, and every later stage receives these typed objects. Defaults are the
paper's (Kim & Kang 2023, Table 2): input 320x240, batch 8, Adam, lr 1e-4, 20 epochs, early
stopping with patience 5.

Search spaces use the same schema; a field listed in :data:`SEARCHABLE_FIELDS` may hold a
distribution instead of a value (see :mod:`raylung.config.search_space`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LabelName = Literal["cancer", "non_cancer"]
EcaKernel = int | Literal["adaptive"]
MetricName = Literal["val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1", "val_auroc"]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a YAML file must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ExperimentConfig(StrictModel):
    name: str = Field("raylung", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    # A local path or any URI pyarrow understands (s3://, gs://, ...). Everything needed to
    # resume or export an experiment lives under `storage/name`.
    storage: str = "experiments"


class SplitConfig(StrictModel):
    """Fractions of a grouped, label-stratified split made when the data has no splits."""

    train: float = Field(0.8, gt=0, lt=1)
    validation: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:.4f}")
        return self


AugmentPolicy = Literal["none", "light", "medium", "heavy", "custom"]


class AugmentConfig(StrictModel):
    """Training-time augmentation: a named policy, optionally overridden field by field.

    Each strength left at ``None`` takes the policy's value; ``policy: custom`` starts from
    ``none`` so only the strengths given here apply. Probabilities are in [0, 1]; the
    magnitudes are documented in :mod:`raylung.data.transforms`.
    """

    policy: AugmentPolicy = "light"
    hflip: float | None = Field(None, ge=0, le=1)
    vflip: float | None = Field(None, ge=0, le=1)
    rotate90: float | None = Field(None, ge=0, le=1)
    affine: float | None = Field(None, ge=0, le=1)
    brightness_contrast: float | None = Field(None, ge=0, le=1)
    gamma: float | None = Field(None, ge=0, le=1)
    blur: float | None = Field(None, ge=0, le=1)
    noise: float | None = Field(None, ge=0, le=1)
    hed_jitter: float | None = Field(None, ge=0, le=1)
    intensity_jitter: float | None = Field(None, ge=0, le=1)


class DataConfig(StrictModel):
    """Where the images are, how they are labelled and split, and how they are fed."""

    # A dataset root; `demo: true` writes the synthetic demo dataset there if it is missing.
    root: Path = Path(".raylung/demo_data")
    demo: bool = False
    layout: Literal["auto", "paper", "folders", "manifest"] = "auto"
    manifest: Path | None = None
    # Folder (or manifest label) name -> binary label, for class-folder layouts such as LC25000.
    label_map: dict[str, LabelName] | None = None
    # Regex applied to the file name; group 1 (or the named group `group`) is the group key.
    group_regex: str | None = None
    split: SplitConfig = SplitConfig()
    # Train on this fraction of the training split only (validation and test untouched): a
    # seeded (split.seed), grouped, label-stratified subsample, nested across fractions, for
    # data-efficiency studies. Searchable; `raylung benchmark --fractions` sweeps it.
    train_fraction: float = Field(1.0, gt=0, le=1)
    # Set by raylung when an experiment fixes its split; users may point at their own file.
    splits_file: str | None = None
    image_size: tuple[int, int] = (320, 240)  # (width, height), the paper's input
    keep_aspect: bool = False
    in_chans: Literal[1, 3] = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    cache: bool = True
    cache_dir: Path | None = None
    on_bad_image: Literal["error", "skip"] = "error"
    loader_workers: int = Field(2, ge=0, le=64)
    # Stain normalisation of RGB H&E tiles before any augmentation (raylung.data.stain_normalize),
    # fitted on `stain_reference`, else on the first training image by path order. Searchable.
    stain_normalize: Literal["none", "macenko", "reinhard"] = "none"
    stain_reference: Path | None = None
    augment: AugmentConfig = AugmentConfig()

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 16 or max(value) > 8192:
            raise ValueError(f"image_size must be (width, height) within 16..8192, got {value}")
        return value

    @field_validator("group_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            import re

            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"group_regex does not compile: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _stain_needs_rgb(self) -> DataConfig:
        if self.stain_normalize != "none" and self.in_chans != 3:
            raise ValueError(f"data.stain_normalize {self.stain_normalize} needs RGB input (in_chans: 3)")
        return self


# One-component-removed variants of ResNet-ours (search_spaces/ablation.yaml): each names the
# switches it changes from the paper's model; `full` is the paper's model itself.
ABLATIONS: dict[str, dict[str, str | bool]] = {
    "full": {},
    "no_eca": {"channel_attention": "none"},
    "se_attention": {"channel_attention": "se"},
    "no_spatial": {"spatial_attention": False},
    "no_attention": {"channel_attention": "none", "spatial_attention": False},
    "relu": {"activation": "relu"},
    "no_depthwise": {"depthwise": False},
    "resnet_stem": {"stem": "resnet"},
    "deep_stem": {"stem": "deep"},
    "conv_shortcut": {"shortcut": "conv"},
}
Ablation = Literal[
    "full", "no_eca", "se_attention", "no_spatial", "no_attention", "relu", "no_depthwise",
    "resnet_stem", "deep_stem", "conv_shortcut",
]  # fmt: skip
SWITCH_FIELDS = ("activation", "channel_attention", "spatial_attention", "depthwise", "stem", "shortcut")


class ModelConfig(StrictModel):
    """Which registered model to build and its architecture hyperparameters."""

    name: str = "resnet_ours50"
    # Architecture fields left at None take the registered variant's own default (for
    # resnet_ours50: eca_k adaptive, stem (32, 64), depths (3, 4, 6, 3), width 1.0). A model
    # that has no such field (the timm baselines have no ECA) rejects a value set here.
    # stem_channels are widths at width 1 (the paper's (32, 64)): the model multiplies them by
    # `width` and rounds to a multiple of 8, so resnet_ours_tiny (width 0.25) builds (8, 16).
    eca_k: EcaKernel | None = None
    stem_channels: tuple[int, int] | None = None
    depths: tuple[int, int, int, int] | None = None
    width: float | None = Field(None, gt=0, le=4)
    drop_path: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    num_classes: int = Field(1, ge=1)
    # ResNet-ours' ablation switches (None: the paper's part). `ablation` names a preset of
    # them (ABLATIONS); a switch set explicitly must agree with the preset.
    activation: Literal["frelu", "relu"] | None = None
    channel_attention: Literal["eca", "se", "none"] | None = None
    spatial_attention: bool | None = None
    depthwise: bool | None = None
    stem: Literal["paper", "resnet", "deep"] | None = None
    shortcut: Literal["avgpool", "conv"] | None = None
    ablation: Ablation | None = None

    @model_validator(mode="after")
    def _ablation_agrees(self) -> ModelConfig:
        for field, value in ABLATIONS.get(self.ablation or "full", {}).items():
            given = getattr(self, field)
            if given is not None and given != value:
                raise ValueError(
                    f"model.ablation {self.ablation} sets {field}={value!r}, but model.{field}={given!r}"
                )
        return self

    def switches(self) -> dict[str, str | bool]:
        """The switches set, explicitly or by the `ablation` preset (absent = the paper's)."""
        chosen = dict(ABLATIONS.get(self.ablation or "full", {}))
        chosen.update({f: getattr(self, f) for f in SWITCH_FIELDS if getattr(self, f) is not None})
        return chosen

    @field_validator("eca_k")
    @classmethod
    def _odd_kernel(cls, value: EcaKernel | None) -> EcaKernel | None:
        if isinstance(value, int) and (value < 1 or value % 2 == 0):
            raise ValueError(f"eca_k must be an odd positive int or 'adaptive', got {value}")
        return value

    @field_validator("stem_channels")
    @classmethod
    def _positive_stem(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"stem_channels must be positive, got {value}")
        return value

    @field_validator("depths")
    @classmethod
    def _positive_depths(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"every stage needs at least one block, got {value}")
        return value

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        from raylung.models.registry import list_models

        known = list_models()
        if value not in known:
            raise ValueError(f"unknown model {value!r}; registered: {', '.join(known)}")
        return value


class TrainConfig(StrictModel):
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(8, ge=1)  # global batch, split evenly across train workers
    lr: float = Field(1e-4, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    optimizer: Literal["adam", "adamw"] = "adam"
    # BCE weight of the positive (cancer) class; "auto" = n_negative / n_positive of train.
    pos_weight: float | Literal["auto"] | None = None
    patience: int | None = Field(5, ge=1)
    # Early stopping and checkpoint retention watch this metric. The paper trained with Keras,
    # whose EarlyStopping watches val_loss by default; see docs/model.md.
    monitor: MetricName = "val_loss"
    seed: int = 0
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    # auto = channels_last on CUDA and the CPU (faster on both: docs/performance.md), else contiguous.
    channels_last: bool | Literal["auto"] = "auto"
    # torch.compile the model: auto = where the measured speed-up repays the cold compile within
    # the planned steps (raylung.train.compile_plan; never on the CPU, long runs on CUDA).
    compile: bool | Literal["auto"] = "auto"
    max_steps_per_epoch: int | None = Field(None, ge=1)
    num_threads: int | None = Field(None, ge=1)
    checkpoints_to_keep: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0)

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        return "min" if self.monitor == "val_loss" else "max"


class ResourcesConfig(StrictModel):
    """Resources of one training run (one trial): its Ray Train worker group."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool | Literal["auto"] = "auto"
    gpus_per_worker: float = Field(1.0, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"


class AshaConfig(StrictModel):
    enabled: bool = True
    grace_period: int = Field(2, ge=1)
    reduction_factor: float = Field(2.0, gt=1)
    brackets: int = Field(1, ge=1)


class SearchConfig(StrictModel):
    # tpe: Optuna's TPE (random start-up trials, then model-based); random; grid: every
    # combination of the `choice` parameters once (num_samples must equal their product).
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    num_samples: int = Field(20, ge=1)
    max_concurrent_trials: int | None = Field(None, ge=1)
    # None: use train.monitor. The tuner passes its metric to early stopping and checkpoints.
    metric: MetricName | None = None
    mode: Literal["min", "max"] | None = None
    seed: int = 0
    n_startup_trials: int = Field(5, ge=0)
    asha: AshaConfig = AshaConfig()


class WandbConfig(StrictModel):
    project: str = "raylung"
    entity: str | None = None
    group: str | None = None  # default: the experiment name
    # auto: online when credentials are present (WANDB_API_KEY, or a netrc: `wandb login`, NETRC).
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    tags: list[str] = Field(default_factory=list)


class ThresholdRule(StrictModel):
    """How an export picks its threshold on calibrated P(cancer) (raylung.artifacts.operating_point).

    fixed: `value` (0.5, the paper's; temperature scaling keeps it in place). youden: max
    sensitivity + specificity - 1 on validation. sensitivity (specificity): the highest (lowest)
    threshold whose validation rate reaches `target`. Fitted rules fall back to `value`.
    """

    rule: Literal["fixed", "youden", "sensitivity", "specificity"] = "fixed"
    value: float = Field(0.5, ge=0, le=1)
    target: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _target_fits_rule(self) -> ThresholdRule:
        if self.rule in ("sensitivity", "specificity") and self.target is None:
            raise ValueError(f"threshold rule {self.rule} needs a target in (0, 1], e.g. target: 0.95")
        if self.rule in ("fixed", "youden") and self.target is not None:
            raise ValueError(f"threshold rule {self.rule} takes no target (sensitivity/specificity do)")
        return self


class ExportConfig(StrictModel):
    """What an export fits on the run's validation split; a bare number is a fixed threshold."""

    threshold: ThresholdRule = ThresholdRule()
    calibrate: bool = True  # temperature scaling; False stores temperature 1.0

    @field_validator("threshold", mode="before")
    @classmethod
    def _bare_number_is_fixed(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"rule": "fixed", "value": value}
        return value


class RaylungConfig(StrictModel):
    experiment: ExperimentConfig = ExperimentConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    resources: ResourcesConfig = ResourcesConfig()
    search: SearchConfig = SearchConfig()
    wandb: WandbConfig = WandbConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RaylungConfig:
        if self.train.batch_size % self.resources.num_workers:
            raise ValueError(
                f"train.batch_size ({self.train.batch_size}) must be divisible by "
                f"resources.num_workers ({self.resources.num_workers})"
            )
        if self.data.mean is not None and len(self.data.mean) != self.data.in_chans:
            raise ValueError("data.mean needs one value per input channel")
        if self.data.std is not None and len(self.data.std) != self.data.in_chans:
            raise ValueError("data.std needs one value per input channel")
        if self.search.mode is not None and self.search.metric is None:
            raise ValueError("search.mode is set but search.metric is not")
        return self

    @property
    def search_metric(self) -> str:
        return self.search.metric or self.train.monitor

    @property
    def search_mode(self) -> Literal["min", "max"]:
        if self.search.mode is not None:
            return self.search.mode
        return "min" if self.search_metric == "val_loss" else "max"


# Dotted paths whose value a search space may replace with a distribution. Everything else
# (paths, resources, the search itself) is fixed for a whole experiment.
SEARCHABLE_FIELDS: frozenset[str] = frozenset(
    {
        "model.name",
        "model.eca_k",
        "model.stem_channels",
        "model.width",
        "model.drop_path",
        "model.dropout",
        *(f"model.{name}" for name in (*SWITCH_FIELDS, "ablation")),
        "train.lr",
        "train.weight_decay",
        "train.optimizer",
        "train.batch_size",
        "train.pos_weight",
        "data.image_size",
        "data.keep_aspect",
        "data.train_fraction",
        "data.stain_normalize",
    }
    | {f"data.augment.{name}" for name in AugmentConfig.model_fields}
)
