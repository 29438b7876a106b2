"""Load a config or search-space YAML file into typed objects, with one clear line per error."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from raylung.config.schema import RaylungConfig
from raylung.config.search_space import (
    Distribution,
    SearchSpace,
    extract_distributions,
    order_by_condition,
    set_path,
)
from raylung.config.yaml_source import YamlSource, apply_overrides, load_yaml, parse_yaml
from raylung.errors import ConfigError

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

    if specs and not allow_search:
        listed = ", ".join(f"{p} ({source.where(p)})" for p, _ in specs)
        raise ConfigError(
            f"this command needs fixed values, but the config searches: {listed}. "
            "Run it with `raylung tune`, or give each field one value (--set key=value)."
        )

    dists: list[Distribution] = []
    for dotted, spec in specs:
        try:
            dists.append(Distribution.parse(dotted, spec))
        except ValueError as exc:
            raise ConfigError(f"{source.where(dotted)}: {dotted}: {exc}") from None

    base = copy.deepcopy(data)
    for dist in dists:
        set_path(base, dist.path, dist.candidates()[0])
    config = _validate(base, source)

    errors: list[str] = []
    for dist in dists:
        for candidate in dist.candidates()[1:] if dist.kind == "choice" else dist.candidates():
            trial = copy.deepcopy(base)
            set_path(trial, dist.path, candidate)
            try:
                RaylungConfig.model_validate(trial)
            except ValidationError as exc:
                note = f" [value {candidate!r} of the {dist.kind} on {dist.path}]"
                errors.extend(_format_errors(exc, source, note))
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))

    where = {d.path: source.where(d.path) for d in dists}
    space = SearchSpace(tuple(order_by_condition(dists, where)))
    return LoadedConfig(config=config, space=space, source=source)


def apply_params(config: RaylungConfig, params: dict[str, Any]) -> RaylungConfig:
    """A copy of `config` with sampled {dotted path: value} set, validated again."""
    data = config.model_dump(mode="json")
    for dotted, value in params.items():
        set_path(data, dotted, value)
    try:
        return RaylungConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_format_errors(exc, YamlSource(data)))) from None
