"""Typed configuration, validated once at the edge."""

from raylung.config.schema import (
    SEARCHABLE_FIELDS,
    AugmentConfig,
    DataConfig,
    ExperimentConfig,
    ExportConfig,
    ModelConfig,
    RaylungConfig,
    ResourcesConfig,
    SearchConfig,
    SplitConfig,
    ThresholdRule,
    TrainConfig,
    WandbConfig,
)

__all__ = [
    "SEARCHABLE_FIELDS",
    "AugmentConfig",
    "DataConfig",
    "ExperimentConfig",
    "ExportConfig",
    "ModelConfig",
    "RaylungConfig",
    "ResourcesConfig",
    "SearchConfig",
    "SplitConfig",
    "ThresholdRule",
    "TrainConfig",
    "WandbConfig",
]
