"""Config files: YAML that remembers the line of every field, `extends: <preset>`, the one
`--set key=value` parser, presets in configs/, and validation into an ExperimentConfig."""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from factmem.config.schema import ExperimentConfig, StageConfig, TrainingConfig, format_errors
from factmem.errors import ConfigError


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and sequence item."""


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict:
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            out[sub] = key.start_mark.line + 1
            _line_map(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), out)
            out[path + (i,)] = item.start_mark.line + 1
    return out


def split_override(text: str) -> tuple[str, Any]:
    """`--set stages[1].size=64` -> ("stages[1].size", 64): the one `--set` parser (run, grid).

    The key is checked against the schema here, so a misspelt one is refused naming the flag
    (grids apply `--set` to every run's config, where no flag is known any more)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. stages[0].size=64")
    key, raw = text.split("=", 1)
    check_key(parse_key(key, f"--set {text!r}"), f"--set {text}")
    return key, yaml.safe_load(raw) if raw else ""


UNKNOWN_FIELD = "unknown field (check the spelling; `factmem fields` lists them all)"
# Mappings the schema leaves open whose keys are another model's fields (checked later).
_KEYED_LIKE = {(StageConfig, "training"): TrainingConfig}


def check_key(path: tuple, where: str) -> None:
    """Refuse a field path no config has, e.g. `stages.0.sise`, as `where: path: unknown field`."""
    node: Any = ExperimentConfig
    for i, part in enumerate(path):
        node = _field_type(node, part)
        if node is None:
            raise ConfigError(f"{where}: {'.'.join(map(str, path[: i + 1]))}: {UNKNOWN_FIELD}")


def _field_type(annotation: Any, part: str | int) -> Any:
    """The type of `annotation[part]`: Any where any key goes (dicts), None where none does."""
    if annotation is Any:
        return Any
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):  # `X | None`, `list[str] | str`
        found = [t for a in typing.get_args(annotation) if (t := _field_type(a, part)) is not None]
        return found[0] if len(found) == 1 else (Any if found else None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        return _KEYED_LIKE.get((annotation, part), field.annotation)
    if origin is list:
        return typing.get_args(annotation)[0] if isinstance(part, int) else None
    if origin is dict:
        return typing.get_args(annotation)[1]
    return None  # a plain value (int, str, a Literal) has no fields


def parse_override(text: str) -> tuple[tuple, Any]:
    """`stages[1].size=64` or `stages.1.size=64` -> (("stages", 1, "size"), 64)."""
    key, value = split_override(text)
    return parse_key(key, f"--set {text!r}"), value


def parse_key(key: str, where: str = "") -> tuple:
    """`stages[1].size` or `stages.1.size` -> ("stages", 1, "size")."""
    parts: list[str | int] = []
    for piece in key.replace("[", ".").replace("]", "").split("."):
        if not piece:
            raise ConfigError(f"{where or key}: empty part in key {key!r}")
        parts.append(int(piece) if piece.isdigit() else piece)
    return tuple(parts)


def apply_overrides(data: dict, overrides: dict[str, Any], where: str) -> None:
    """Set `{field path: value}` in a config dict in place (the grid's axes use this)."""
    for key, value in overrides.items():
        _apply_override(data, parse_key(str(key), where), copy.deepcopy(value),
                        f"{where}: {key}")  # fmt: skip


def _apply_override(data: dict, path: tuple, value: Any, text: str) -> None:
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"{text}: no item {part} at {'.'.join(map(str, path[:i]))}")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"{text}: {'.'.join(map(str, path[:i]))} is not a mapping")
            node = node.setdefault(part, {})
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"{text}: no item {last} to replace")
    elif not isinstance(node, dict):
        raise ConfigError(f"{text}: parent of {last!r} is not a mapping")
    node[last] = value


PRESET_DIRS = [Path.cwd() / "configs", Path(__file__).resolve().parents[3] / "configs"]


def find_config(name: str | Path, near: Path | None = None) -> Path:
    """A config path, or the name of a preset in configs/ (e.g. `default`)."""
    path = Path(name)
    if path.is_file():
        return path
    folders = ([near] if near else []) + PRESET_DIRS
    for folder in folders:
        for candidate in (folder / str(name), folder / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    presets = sorted({p.stem for d in PRESET_DIRS if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError(f"no config file or preset named {name!r}; presets: {', '.join(presets)}")


def _merge(base: Any, child: Any) -> Any:
    """child over base: mappings key by key, lists item by item, anything else replaced."""
    if isinstance(base, dict) and isinstance(child, dict):
        return {k: _merge(base[k], v) if k in base else v for k, v in child.items()} | {
            k: v for k, v in base.items() if k not in child
        }
    if isinstance(base, list) and isinstance(child, list):
        merged = [_merge(b, c) for b, c in zip(base, child, strict=False)]
        return (
            merged + child[len(base) :] if len(child) > len(base) else merged + base[len(child) :]
        )
    return child


def yaml_with_lines(path: Path) -> tuple[dict, dict]:
    """(data, {field path: line}) of a YAML file whose top level is a mapping."""
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of fields")
    return data, _line_map(node) if node is not None else {}


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    """(data, line map) of a config file, with `extends: <preset or file>` resolved."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data, lines = yaml_with_lines(path)
    parent = data.pop("extends", None)
    if parent is not None:
        parent_path = find_config(parent, near=path.parent).resolve()
        if parent_path in seen:
            raise ConfigError(f"{path}: `extends` loops back to {parent_path}")
        base, _ = _read_yaml(parent_path, seen + (path.resolve(),))
        data = _merge(base, data)
    return data, lines


def read_config_data(name: str | Path) -> dict:
    """A config file or preset as a plain dict, `extends` resolved, not yet validated."""
    return _read_yaml(find_config(name))[0]


def load_config(
    source: str | Path | dict, overrides: list[str] = (), options: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Read a YAML file (or a dict), apply `key=value` overrides, validate.

    A file may start from another with `extends: <preset name or path>`: its fields are laid
    over the other's (mappings key by key, stage lists stage by stage). `options`: top-level
    fields given as command-line options (`{"name": ...}` is `--name`), set after overrides;
    None leaves a field as it is. Errors name the field and its line in the file, or the
    flag that set it (`--set stages[0].size=abc: stages.0.size: ...`).
    """
    lines: dict | None = None
    label = "config"
    if isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        data, lines = _read_yaml(Path(source))
        label = str(source)
    flags: dict[tuple, str] = {}  # field path -> the flag that set it
    given = [(parse_override(text), f"--set {text}") for text in overrides]
    given += [(((field,), value), f"--{field.replace('_', '-')} {value}")
              for field, value in (options or {}).items() if value is not None]  # fmt: skip
    for (key, value), flag in given:
        _apply_override(data, key, value, flag)
        flags[key] = flag
        if lines is not None:
            lines = {k: v for k, v in lines.items() if k[: len(key)] != key}
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, label, lines, flags)) from None


def _format_errors(err: ValidationError, label: str, lines: dict | None,
                   flags: dict[tuple, str]) -> str:  # fmt: skip
    """format_errors, with an error in a field a flag set (or created) blamed on the flag:
    such fields get a placeholder for a line number, then `label:<placeholder>: ` -> `flag: `."""
    if not flags:
        return format_errors(err, label, lines)
    marks = dict(lines) if lines is not None else {(): "\0"}  # "\0": no file, `label: ` alone
    for i, path in enumerate(flags):
        marks[path] = f"\0{i}"
        for cut in range(len(path) - 1, 0, -1):  # mappings the flag created, e.g. `mixing`
            if path[:cut] in marks:
                break
            marks[path[:cut]] = f"\0{i}"
    text = format_errors(err, label, marks).replace(f"{label}:\0: ", f"{label}: ")
    for i, flag in enumerate(flags.values()):
        text = text.replace(f"{label}:\0{i}: ", f"{flag}: ")
    return text


def config_to_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
