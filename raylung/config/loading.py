"""Load a config or search-space YAML file into typed objects, with one clear line per error."""

from __future__ import annotations

import copy
import difflib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from raylung.config.schema import RaylungConfig
from raylung.config.search_space import (
    Distribution,
    SearchSpace,
    delete_path,
    extract_distributions,
    get_path,
    order_by_condition,
    set_path,
)
from raylung.config.yaml_source import YamlSource, apply_overrides, load_yaml, parse_yaml
from raylung.errors import ConfigError

log = logging.getLogger(__name__)

# Fields whose value is itself a mapping: never mistaken for a distribution or a section.
_MAPPING_FIELDS = frozenset({"data.label_map"})


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config (distributions replaced by a representative value) and its space."""

    config: RaylungConfig
    space: SearchSpace
    source: YamlSource


def _model_at(path: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = RaylungConfig
    for part in path:
        info = model.model_fields.get(part)
        if info is None or not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)):
            return None
        model = info.annotation
    return model


def _format_errors(exc: ValidationError, source: YamlSource, note: str = "") -> list[str]:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
        dotted = ".".join(loc) or "<top level>"
        if error["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            known = list(parent.model_fields) if parent else []
            hint = difflib.get_close_matches(loc[-1], known, n=1)
            text = f"unknown key {loc[-1]!r}"
            if hint:
                text += f" (did you mean {hint[0]!r}?)"
            elif known:
                text += f" (known: {', '.join(known)})"
        else:
            text = error["msg"].removeprefix("Value error, ")
            if error["type"] not in ("value_error", "assertion_error") and "input" in error:
                text += f" (got {error['input']!r})"
        lines.append(f"{source.where(dotted)}: {dotted}: {text}{note}")
    return lines


def _validate(data: dict[str, Any], source: YamlSource, note: str = "") -> RaylungConfig:
    try:
        return RaylungConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_format_errors(exc, source, note))) from None


def load_config(
    path: Path | str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    allow_search: bool = True,
    text: str | None = None,
) -> LoadedConfig:
    """Read, override and validate a config; `allow_search=False` rejects distributions."""
    source = (
        parse_yaml(text, Path(path) if path else None)
        if text is not None
        else (load_yaml(path) if path is not None else YamlSource({}))
    )
    apply_overrides(source, list(overrides))
    data, specs = extract_distributions(source.data, source.where, _MAPPING_FIELDS)

    dists: list[Distribution] = []
    for dotted, spec in specs:
        try:
            dists.append(Distribution.parse(dotted, spec))
        except ValueError as exc:
            raise ConfigError(f"{source.where(dotted)}: {dotted}: {exc}") from None

    where = {d.path: source.where(d.path) for d in dists}
    # Before a fixed-value command refuses a search: a parameter whose `when` cannot hold for
    # the fixed values (`--set data.augment.policy=light`) is no search, it keeps its default.
    dists = _settle_fixed_conditions(dists, data, where)
    if dists and not allow_search:
        listed = ", ".join(f"{d.path} ({where[d.path]})" for d in dists)
        raise ConfigError(
            f"this command needs fixed values, but the config searches: {listed}. "
            "Run it with `raylung tune`, or give each field one value (--set key=value)."
        )
    space = SearchSpace(tuple(order_by_condition(dists, where)))

    # The base holds each unconditional parameter's first candidate (every trial overwrites
    # it) and no value at all for a conditional one: where its condition fails, a trial keeps
    # the schema default, never a candidate of the inactive branch.
    base = copy.deepcopy(data)
    for dist in space.distributions:
        if dist.when:
            delete_path(base, dist.path)
        else:
            set_path(base, dist.path, dist.candidates()[0])
    config = _validate(base, source)

    errors: list[str] = []
    for dist in space.distributions:
        context = _activating_values(space, dist)
        first_is_base = dist.kind == "choice" and not dist.when
        for candidate in dist.candidates()[1:] if first_is_base else dist.candidates():
            trial = copy.deepcopy(base)
            for path, value in {**context, dist.path: candidate}.items():
                set_path(trial, path, value)
            try:
                RaylungConfig.model_validate(trial)
            except ValidationError as exc:
                note = f" [value {candidate!r} of the {dist.kind} on {dist.path}]"
                errors.extend(_format_errors(exc, source, note))
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))
    return LoadedConfig(config=config, space=space, source=source)


def _settle_fixed_conditions(
    dists: list[Distribution], data: dict[str, Any], where: dict[str, str]
) -> list[Distribution]:
    """Resolve `when` conditions on fields the file (or --set) fixes to one value.

    `--set data.augment.policy=heavy` on a space whose strengths are searched `when` the policy
    is `custom` fixes the condition: a condition that holds is dropped (the parameter is always
    searched), and a parameter whose condition cannot hold is not searched at all (it keeps its
    schema default, with a warning), exactly as a trial with that value would resolve it.
    A condition on a field the file does not mention stays an error (see order_by_condition).
    """
    missing = object()
    dropped: dict[str, Any] = {}  # path -> the schema default it keeps

    def fixed_value(dotted: str) -> Any:
        if dotted in dropped:
            return dropped[dotted]
        value = get_path(data, dotted, missing)
        return missing if isinstance(value, dict) else value

    kept = {d.path: d for d in dists}
    changed = True
    while changed:
        changed = False
        for dist in list(kept.values()):
            fixed = {
                p: allowed
                for p, allowed in dist.when.items()
                if p not in kept and fixed_value(p) is not missing
            }
            if not fixed:
                continue
            changed = True
            failed = {p: fixed_value(p) for p, allowed in fixed.items() if fixed_value(p) not in allowed}
            if failed:
                del kept[dist.path]
                delete_path(data, dist.path)
                dropped[dist.path] = get_path(RaylungConfig().model_dump(mode="json"), dist.path)
                log.warning(
                    "%s: %s is not searched: its condition does not hold for %s",
                    where[dist.path],
                    dist.path,
                    ", ".join(f"{p}={v!r}" for p, v in failed.items()),
                )
            else:
                remaining = {p: a for p, a in dist.when.items() if p not in fixed}
                kept[dist.path] = replace(dist, when=remaining)
    return [kept[d.path] for d in dists if d.path in kept]


def _activating_values(space: SearchSpace, dist: Distribution) -> dict[str, Any]:
    """Values of the parameters `dist` depends on (transitively) that make it active."""
    by_path = {d.path: d for d in space.distributions}
    values: dict[str, Any] = {}
    pending = list(dist.when.items())
    while pending:
        path, allowed = pending.pop()
        if path not in values:
            values[path] = allowed[0]
            pending.extend(by_path[path].when.items())
    return values


def apply_params(config: RaylungConfig, params: dict[str, Any]) -> RaylungConfig:
    """A copy of `config` with {dotted path: value} set, validated again."""
    return _apply(config, params, ())


def trial_config(base: RaylungConfig, space: SearchSpace, values: dict[str, Any]) -> RaylungConfig:
    """The full config of one trial: `base` with the active searched values set.

    `values` are decoded config values ({dotted path: value}). Every searched parameter that
    is not active for them (its `when` fails, or it was not drawn) is reset to its schema
    default, whatever `base` holds there. This is the one function the tune, the dry run and
    `train --best` use, so all three resolve a trial the same way.
    """
    active = space.resolve(values)
    return _apply(base, active, [p for p in space.paths if p not in active])


def _apply(config: RaylungConfig, params: dict[str, Any], reset: Any) -> RaylungConfig:
    data = config.model_dump(mode="json")
    for dotted in reset:
        delete_path(data, dotted)
    for dotted, value in params.items():
        set_path(data, dotted, value)
    try:
        return RaylungConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_format_errors(exc, YamlSource(data)))) from None
