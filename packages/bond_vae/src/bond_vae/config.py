"""Typed configuration dataclasses <-> command-line flags and JSON.

Each dataclass field becomes a flag named after it (``learning_rate`` -> ``--learning-rate``);
a field that holds a nested dataclass contributes its fields with the prefix given in its
``metadata["prefix"]`` (``encoder.num_layers`` -> ``--encoder-num-layers``). Help text and
choices come from the field metadata, so the flags cannot drift from the dataclasses.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """Settings that no run can use; the message says which flag and why."""


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """Return (inner type, is_optional) for ``X | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0], True
    return annotation, False


def _flag(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one flag per field of ``cls`` (recursing into nested dataclasses)."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    group = parser.add_argument_group(cls.__doc__.strip().splitlines()[0] if cls.__doc__ else cls.__name__)
    for field in dataclasses.fields(cls):
        annotation, optional = _unwrap_optional(hints[field.name])
        if dataclasses.is_dataclass(annotation):
            add_dataclass_arguments(parser, annotation, prefix + field.metadata.get("prefix", ""))
            continue
        default = getattr(defaults, field.name)
        help_text = field.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": prefix + field.name, "default": default}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = annotation
            kwargs["metavar"] = field.metadata.get("metavar", annotation.__name__.upper())
            if "choices" in field.metadata:
                kwargs["choices"] = field.metadata["choices"]
                kwargs.pop("metavar")
        shown_default = "none" if default is None and optional else default
        kwargs["help"] = f"{help_text} (default: {shown_default})"
        group.add_argument(_flag(prefix, field.name), **kwargs)


def dataclass_from_namespace(cls: type[T], namespace: argparse.Namespace, prefix: str = "") -> T:
    """Build ``cls`` from parsed flags added by :func:`add_dataclass_arguments`."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        annotation, _ = _unwrap_optional(hints[field.name])
        if dataclasses.is_dataclass(annotation):
            values[field.name] = dataclass_from_namespace(
                annotation, namespace, prefix + field.metadata.get("prefix", "")
            )
        else:
            values[field.name] = getattr(namespace, prefix + field.name)
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as JSON-ready plain types (paths as strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Inverse of :func:`to_dict`; unknown keys raise ``TypeError``."""
    hints = typing.get_type_hints(cls)
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise TypeError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
    converted = {}
    for name, value in values.items():
        annotation, _ = _unwrap_optional(hints[name])
        if dataclasses.is_dataclass(annotation):
            converted[name] = from_dict(annotation, value)
        elif annotation is Path and value is not None:
            converted[name] = Path(value)
        else:
            converted[name] = value
    return cls(**converted)


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Destinations of the flags actually given in ``argv`` (as opposed to left at their default)."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))
