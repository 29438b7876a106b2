"""Check a search space before any compute: every searched parameter must change what is trained.

For each searched parameter, its values (a choice's options, a range's two bounds) are set in
turn while every other parameter holds one combination of its own values ("a context"); each
setting is resolved into an :class:`~raylung.plan.effective.EffectivePipeline`. A parameter is

- an **error** when, in every context where it is active, all its values give the same
  pipeline: the search would spend trials on a setting the model or the data pipeline ignores
  (e.g. stem widths that the tiny model's width multiplier rounds to the same 8 channels);
- a **warning** for two options of a choice that give the same pipeline in every context.

A combination that cannot be built at all (a model that rejects a searched field) is an error
too. Contexts are every combination of the other parameters' values when there are at most
``max_contexts`` of them, else that many drawn with a fixed seed, so the check is repeatable
and takes seconds. No data is read and no weights are allocated.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from typing import Any, Literal

from raylung.config import RaylungConfig
from raylung.config.loading import LoadedConfig, trial_config
from raylung.config.search_space import Distribution, SearchSpace
from raylung.errors import ConfigError, RaylungError
from raylung.plan.effective import EffectivePipeline, effective_pipeline

# Why a parameter can build the same pipeline for different values: said next to the error.
_HINTS: dict[str, str] = {
    "model.stem_channels": "stem widths are multiplied by the model's width and rounded to a "
    "multiple of 8 (at least 8) before the model is built",
    "model.width": "every width is rounded to a multiple of 8 (at least 8)",
    "data.augment.hed_jitter": "HED stain jitter is never built for 1-channel input",
}


@dataclass(frozen=True)
class SpaceProblem:
    level: Literal["error", "warning"]
    path: str
    where: str  # file:line of the parameter
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path}: {self.message}"


class SpaceCheckError(ConfigError):
    """A search space with parameters that cannot change what is trained."""


class _Resolver:
    """Decoded values -> effective pipeline (or the error building it), cached by the values."""

    def __init__(self, base: RaylungConfig, space: SearchSpace) -> None:
        self.base, self.space = base, space
        self._cache: dict[str, EffectivePipeline | str] = {}

    def __call__(self, values: dict[str, Any]) -> EffectivePipeline | str:
        active = self.space.resolve(values)
        key = json.dumps(active, sort_keys=True, default=str)
        if key not in self._cache:
            try:
                self._cache[key] = effective_pipeline(trial_config(self.base, self.space, active))
            except (RaylungError, ValueError) as exc:
                self._cache[key] = str(exc).splitlines()[0]
        return self._cache[key]


def _contexts(others: list[Distribution], max_contexts: int, seed: int = 0) -> list[dict[str, Any]]:
    """Combinations of the other parameters' values: all of them, or a seeded sample."""
    pools = [d.candidates() for d in others]
    total = 1
    for pool in pools:
        total *= len(pool)
    if total <= max_contexts:
        return [
            dict(zip([d.path for d in others], combo, strict=True)) for combo in itertools.product(*pools)
        ]
    rng = random.Random(seed)
    first = {d.path: pool[0] for d, pool in zip(others, pools, strict=True)}
    drawn = [first] + [
        {d.path: rng.choice(pool) for d, pool in zip(others, pools, strict=True)}
        for _ in range(max_contexts - 1)
    ]
    return drawn


def _describe(pipeline: EffectivePipeline, path: str) -> str:
    if path.startswith("model."):
        m = pipeline.model
        facts = ", ".join(f"{k} {v}" for k, v in m.arch.items())
        return f"model {m.name} with {m.params:,} parameters, fingerprint {m.fingerprint}" + (
            f" ({facts})" if facts else ""
        )
    if path.startswith("data.augment."):
        return f"augmentation [{pipeline.augment_text()}]"
    if path.startswith("data."):
        return f"input {pipeline.input}"
    return f"optimisation {pipeline.optimization}"


def check_parameter(
    dist: Distribution, resolve: _Resolver, space: SearchSpace, where: str, max_contexts: int
) -> list[SpaceProblem]:
    values = dist.candidates()
    others = [d for d in space.distributions if d.path != dist.path]
    labels = [json.dumps(v) if not isinstance(v, str) else v for v in values]
    undistinguished = {(i, j) for i in range(len(values)) for j in range(i + 1, len(values))}
    active_anywhere = False
    last: list[EffectivePipeline] = []
    for context in _contexts(others, max_contexts):
        settings = [{**context, dist.path: value} for value in values]
        if dist.path not in space.resolve(settings[0]):
            continue  # inactive here: its values cannot matter in this context
        active_anywhere = True
        pipelines = [resolve(s) for s in settings]
        broken = [(label, p) for label, p in zip(labels, pipelines, strict=True) if isinstance(p, str)]
        if broken:
            combo = ", ".join(f"{k}={v}" for k, v in space.resolve(settings[0]).items() if k != dist.path)
            label, reason = broken[0]
            return [
                SpaceProblem(
                    "error",
                    dist.path,
                    where,
                    f"value {label} cannot be built with {combo or 'the fixed values'}: {reason}",
                )
            ]
        last = pipelines  # type: ignore[assignment]
        undistinguished = {(i, j) for i, j in undistinguished if pipelines[i] == pipelines[j]}
        if not undistinguished:
            return []
    if not active_anywhere or not last:
        return []
    if len(undistinguished) == len(values) * (len(values) - 1) // 2:
        hint = f"; {_HINTS[dist.path]}" if dist.path in _HINTS else ""
        return [
            SpaceProblem(
                "error",
                dist.path,
                where,
                f"searched over {', '.join(labels)}, but every value builds the same pipeline: "
                f"{_describe(last[0], dist.path)}{hint}. "
                "Remove it from the search or give values that differ.",
            )
        ]
    return [
        SpaceProblem(
            "warning",
            dist.path,
            where,
            f"values {labels[i]} and {labels[j]} build the same pipeline ({_describe(last[i], dist.path)}); "
            "trials of one repeat the other",
        )
        for i, j in sorted(undistinguished)
    ]


def check_space(loaded: LoadedConfig, max_contexts: int = 128) -> list[SpaceProblem]:
    """Every problem of the space, errors first; an empty list when each parameter matters."""
    resolve = _Resolver(loaded.config, loaded.space)
    problems: list[SpaceProblem] = []
    for dist in loaded.space.distributions:
        where = loaded.source.where(dist.path)
        problems += check_parameter(dist, resolve, loaded.space, where, max_contexts)
    return sorted(problems, key=lambda p: p.level != "error")


def require_sound_space(loaded: LoadedConfig) -> list[SpaceProblem]:
    """Raise :class:`SpaceCheckError` listing the errors; return the warnings."""
    problems = check_space(loaded)
    errors = [p for p in problems if p.level == "error"]
    if errors:
        raise SpaceCheckError("\n".join(str(p) for p in errors))
    return problems
