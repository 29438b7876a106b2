"""Typed configuration, validated once at the edge."""

from raylung.config.schema import (
    SEARCHABLE_FIELDS,
    AugmentConfig,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    RaylungConfig,
    ResourcesConfig,
    SearchConfig,
    SplitConfig,
    TrainConfig,
    WandbConfig,
)

__all__ = [
    "SEARCHABLE_FIELDS",
    "AugmentConfig",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "RaylungConfig",
    "ResourcesConfig",
    "SearchConfig",
    "SplitConfig",
    "TrainConfig",
    "WandbConfig",
]
