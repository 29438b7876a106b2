"""Distributions in a config file, and their translation into an Optuna define-by-run space.

A search space is an ordinary raylung config in which a searchable field (see
``SEARCHABLE_FIELDS``) holds a distribution instead of a value::

    train:
      lr: {loguniform: [1.0e-5, 1.0e-3]}
    model:
      eca_k: {choice: [3, 5, 7, adaptive]}
    data:
      augment:
        policy: {choice: [light, heavy, custom]}
        hed_jitter: {uniform: [0.0, 0.5], when: {data.augment.policy: custom}}

``when`` makes a parameter conditional on the sampled value of a ``choice``: Optuna samples it
only when the condition holds, and otherwise the parameter is *absent* from the trial, so the
field keeps its schema default (``None`` for an augmentation strength: the policy's value).
An inactive parameter never takes one of its candidate values. Every candidate value is
checked against the schema, with its conditions met, before anything runs, so an impossible
range fails at load time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from raylung.config.schema import SEARCHABLE_FIELDS
from raylung.errors import ConfigError

if TYPE_CHECKING:
    import optuna

Kind = Literal["choice", "uniform", "loguniform", "int", "logint"]
KINDS: tuple[str, ...] = ("choice", "uniform", "loguniform", "int", "logint")
_OPTIONAL_KEYS = {"step", "when"}


def is_distribution(value: Any) -> bool:
    """A mapping with exactly one distribution keyword (plus `step`/`when`)."""
    if not isinstance(value, dict):
        return False
    kinds = [k for k in value if k in KINDS]
    return len(kinds) == 1 and set(value) - set(kinds) <= _OPTIONAL_KEYS


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {value!r}") from None


@dataclass(frozen=True)
class Distribution:
    """One searched field: its dotted path, the sampling rule and an optional condition."""

    path: str
    kind: Kind
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, path: str, spec: dict[str, Any]) -> Distribution:
        kind = next(k for k in spec if k in KINDS)
        raw = spec[kind]
        when = {
            str(cond_path): tuple(allowed) if isinstance(allowed, list) else (allowed,)
            for cond_path, allowed in (spec.get("when") or {}).items()
        }
        if "when" in spec and not isinstance(spec["when"], dict):
            raise ValueError("`when` must map a dotted field to a value or a list of values")
        if kind == "choice":
            if not isinstance(raw, list) or not raw:
                raise ValueError("choice needs a non-empty list of options")
            if "step" in spec:
                raise ValueError("choice takes no step")
            return cls(path, kind, choices=tuple(raw), when=when)
        if not isinstance(raw, list) or len(raw) != 2:
            raise ValueError(f"{kind} needs [low, high]")
        low, high = _number(raw[0], "low"), _number(raw[1], "high")
        step = _number(spec["step"], "step") if "step" in spec else None
        if not low < high:
            raise ValueError(f"{kind} needs low < high, got [{raw[0]}, {raw[1]}]")
        if kind in ("loguniform", "logint") and low <= 0:
            raise ValueError(f"{kind} needs low > 0, got {raw[0]}")
        if kind in ("int", "logint"):
            if not (low.is_integer() and high.is_integer()):
                raise ValueError(f"{kind} bounds must be integers, got [{raw[0]}, {raw[1]}]")
            if step is not None and (not step.is_integer() or step < 1):
                raise ValueError(f"{kind} step must be a positive integer")
        if step is not None and step <= 0:
            raise ValueError("step must be positive")
        if step is not None and kind in ("loguniform", "logint"):
            raise ValueError(f"{kind} takes no step")
        return cls(path, kind, low=low, high=high, step=step, when=when)

    def candidates(self) -> list[Any]:
        """Values checked against the schema at load time (the options, or both bounds)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind in ("int", "logint"):
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def label(self, value: Any) -> Any:
        # Optuna's categorical choices must be primitives; lists like [32, 64] travel as JSON.
        return value if _primitive(value) else json.dumps(value)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.path, [self.label(c) for c in self.choices])
        if self.kind == "uniform":
            return trial.suggest_float(self.path, self.low, self.high, step=self.step)
        if self.kind == "loguniform":
            return trial.suggest_float(self.path, self.low, self.high, log=True)
        step = int(self.step) if self.step else 1
        return trial.suggest_int(
            self.path, int(self.low), int(self.high), step=step, log=self.kind == "logint"
        )

    def decode(self, sampled: Any) -> Any:
        """Turn a sampled (possibly JSON-labelled) value back into the config value."""
        if self.kind == "choice":
            for choice in self.choices:
                if self.label(choice) == sampled:
                    return choice
            raise KeyError(f"{self.path}: {sampled!r} is not one of the choices")
        return sampled

    def active(self, sampled: dict[str, Any]) -> bool:
        """Whether every condition holds for these decoded values (an absent one never holds)."""
        return all(path in sampled and sampled[path] in allowed for path, allowed in self.when.items())

    def describe(self) -> str:
        if self.kind == "choice":
            text = "choice " + ", ".join(str(c) for c in self.choices)
        else:
            text = f"{self.kind} [{self.low:g}, {self.high:g}]"
            if self.step:
                text += f" step {self.step:g}"
        if self.when:
            text += " when " + ", ".join(f"{p} in {list(v)}" for p, v in self.when.items())
        return text


@dataclass(frozen=True)
class SearchSpace:
    """The searched fields of an experiment, ordered so conditions come before dependants."""

    distributions: tuple[Distribution, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.distributions)

    @property
    def paths(self) -> list[str]:
        return [d.path for d in self.distributions]

    def define_by_run(self, trial: optuna.Trial) -> None:
        """Optuna define-by-run space; Ray's OptunaSearch captures the suggested values."""
        decoded: dict[str, Any] = {}
        for dist in self.distributions:
            if dist.active(decoded):
                decoded[dist.path] = dist.decode(dist.suggest(trial))

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """Sampled parameters (as Ray reports them) -> {dotted path: config value}."""
        by_path = {d.path: d for d in self.distributions}
        return {path: by_path[path].decode(value) for path, value in params.items() if path in by_path}

    def resolve(self, values: dict[str, Any]) -> dict[str, Any]:
        """Only the parameters active under `values` (decoded), in condition order.

        A value given for a parameter whose condition does not hold is dropped: the trial's
        field keeps its schema default, exactly as if the sampler had never drawn it.
        """
        active: dict[str, Any] = {}
        for dist in self.distributions:
            if dist.path in values and dist.active(active):
                active[dist.path] = values[dist.path]
        return active

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "path": d.path,
                "kind": d.kind,
                "choices": list(d.choices),
                "low": d.low,
                "high": d.high,
                "step": d.step,
                "when": {k: list(v) for k, v in d.when.items()},
            }
            for d in self.distributions
        ]


def order_by_condition(dists: list[Distribution], where: dict[str, str]) -> list[Distribution]:
    by_path = {d.path: d for d in dists}
    for dist in dists:
        for cond_path, allowed in dist.when.items():
            target = by_path.get(cond_path)
            if target is None or target.kind != "choice":
                raise ConfigError(
                    f"{where[dist.path]}: {dist.path}: `when` refers to {cond_path!r}, which is "
                    "not a searched `choice` in this file"
                )
            unknown = [a for a in allowed if a not in target.choices]
            if unknown:
                raise ConfigError(
                    f"{where[dist.path]}: {dist.path}: `when` value(s) {unknown} are not among "
                    f"the choices of {cond_path}: {list(target.choices)}"
                )
    ordered: list[Distribution] = []
    placed: set[str] = set()
    pending = list(dists)
    while pending:
        ready = [d for d in pending if all(p in placed for p in d.when)]
        if not ready:
            cycle = ", ".join(d.path for d in pending)
            raise ConfigError(f"circular `when` conditions between: {cycle}")
        for dist in ready:
            ordered.append(dist)
            placed.add(dist.path)
            pending.remove(dist)
    return ordered


def extract_distributions(
    data: dict[str, Any], where: callable, dict_fields: frozenset[str]
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Split raw YAML data into (data with each distribution replaced by a candidate, specs).

    `dict_fields` are fields whose values are mappings themselves (e.g. `data.label_map`), so
    a mapping there is a value, never a distribution.
    """
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(node: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            if path in dict_fields:
                out[key] = value
            elif is_distribution(value):
                if path not in SEARCHABLE_FIELDS:
                    raise ConfigError(
                        f"{where(path)}: {path} is not searchable; it must be a fixed value. "
                        f"Searchable fields: {', '.join(sorted(SEARCHABLE_FIELDS))}"
                    )
                found.append((path, value))
                out[key] = value  # replaced by a candidate below
            elif isinstance(value, dict):
                out[key] = walk(value, path)
            else:
                out[key] = value
        return out

    return walk(data, ""), found


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def delete_path(data: dict[str, Any], dotted: str) -> None:
    """Remove a dotted key if present, so validation gives the field its schema default."""
    node: Any = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def get_path(data: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
