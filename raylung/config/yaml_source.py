"""Read YAML while remembering where each key came from.

Error messages name the file line of the offending key ("ours.yaml:14: train.lr: ..."), which
plain ``yaml.safe_load`` forgets. Also applies ``--set key=value`` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raylung.errors import ConfigError


@dataclass
class YamlSource:
    """A parsed YAML mapping plus the line number (1-based) of every dotted key path."""

    data: dict[str, Any]
    path: Path | None = None
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, dotted: str) -> str:
        """`file:line` of a dotted key (or its nearest ancestor in the file), or `--set #n`."""
        name = self.path.name if self.path else "<config>"
        parts = dotted.split(".")
        while parts:
            line = self.lines.get(".".join(parts))
            if line is not None:
                return f"{name}:{line}" if line > 0 else f"--set #{-line}"
            parts.pop()
        return name


def _construct(node: yaml.Node, prefix: str, lines: dict[str, int]) -> Any:
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"line {key_node.start_mark.line + 1}: keys must be plain names")
            key = str(key_node.value)
            dotted = f"{prefix}.{key}" if prefix else key
            if key in result:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {dotted!r}")
            lines[dotted] = key_node.start_mark.line + 1
            result[key] = _construct(value_node, dotted, lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, f"{prefix}[{i}]", lines) for i, item in enumerate(node.value)]
    loader = yaml.SafeLoader("")
    return loader.construct_object(node, deep=True)


def load_yaml(path: Path | str) -> YamlSource:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path | None = None) -> YamlSource:
    name = path.name if path else "<config>"
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if node is None:
        return YamlSource({}, path, {})
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{name}: the top level must be a mapping of sections")
    lines: dict[str, int] = {}
    data = _construct(node, "", lines)
    return YamlSource(data, path, lines)


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=3e-4` -> ("train.lr", 0.0003); the value is read as YAML (lists, null...)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects key=value with a dotted key, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads "1e-4" as a string; users mean a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key, value


def apply_overrides(source: YamlSource, overrides: list[str]) -> YamlSource:
    """Set each `key=value` in place; the key's line becomes the override's position."""
    for position, text in enumerate(overrides, start=1):
        key, value = parse_override(text)
        node = source.data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
        source.lines.pop(key, None)
        source.lines[key] = -position
    return source
