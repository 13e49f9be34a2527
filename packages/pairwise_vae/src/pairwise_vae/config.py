"""Typed configuration dataclasses <-> command-line flags, config files and JSON.

Each dataclass field becomes a flag named after it (``learning_rate`` -> ``--learning-rate``);
a field that holds a nested dataclass contributes its fields with the prefix given in its
``metadata["prefix"]`` (``encoder.num_layers`` -> ``--encoder-num-layers``). Help text and
choices come from the field metadata, so the flags cannot drift from the dataclasses. An
optional field (``X | None``) takes the word ``none`` on the command line; a list field
(``list[X]``) takes one or more values after its flag (a list, or one value, in a config file).

Field metadata read here besides ``help``, ``metavar``, ``choices`` and ``prefix``:

* ``"flag": False``: a setting without a flag, kept so that checkpoints which record it
  rebuild their model; it stays at its default in a new run.
* ``"older_records": VALUE``: a record written before the field existed (a checkpoint of an
  older release) takes VALUE, the behaviour of that release, rather than today's default.
* ``"older_records_use": NAME``: such a record takes the value of field NAME (which did the
  field's job then).

A dataclass may list settings removed outright in a ``RETIRED`` class attribute (name ->
:class:`Retired`): :func:`from_dict` drops them where a record holds their inert value and
refuses the record otherwise.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

T = TypeVar("T")
PACKAGE = __name__.split(".")[0]
RETIRED_IN = "0.3"  # the release that removed the settings of the RETIRED tables
LAST_RELEASE_WITH_RETIRED = "0.2"
CONFIG_FILE_SUFFIXES = (".yaml", ".yml", ".toml")
VALUE_KINDS = {"int": "an integer", "float": "a number", "str": "text", "Path": "a path"}  # by flag type name


class ConfigError(ValueError):
    """Settings that no run can use; the message says which flag and why."""


class ConfigFileError(ConfigError):
    """A config file that cannot be read, or that names an unknown flag or a value its flag does not take:
    a usage error like a bad flag, so the command exits with code 2."""

    exit_code = 2


@dataclasses.dataclass(frozen=True)
class Retired:
    """A setting removed from a configuration dataclass: its flag, and the value at which it did nothing."""

    flag: str
    inert: Any

    def refusal(self, value: Any) -> str:
        """Why a record that holds ``value`` cannot be used by this release."""
        given = self.flag if value is True else f"{self.flag} {value}"
        return f"written with {given}, retired in {RETIRED_IN}; use {PACKAGE} {LAST_RELEASE_WITH_RETIRED}"


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """Return (inner type, is_optional) for ``X | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0], True
    return annotation, False


def _none_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag type that reads the word ``none`` (any case) as None and anything else with ``parse``."""

    def parse_optional(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    parse_optional.__name__ = parse.__name__  # argparse names it in "invalid float value: ..."
    return parse_optional


class _NoneOrList(argparse.Action):
    """Stores the values of an optional list flag, or None for the word ``none`` given alone."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None):
        if None in values:
            if len(values) > 1:
                parser.error(f"{option}: none cannot be given with other values")
            values = None
        setattr(namespace, self.dest, values)


def _flag(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def _has_flag(field: dataclasses.Field) -> bool:
    return field.metadata.get("flag", True)


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one flag per field of ``cls`` (recursing into nested dataclasses; fields with
    ``metadata["flag"] = False`` get none)."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    group = parser.add_argument_group(cls.__doc__.strip().splitlines()[0] if cls.__doc__ else cls.__name__)
    for field in dataclasses.fields(cls):
        annotation, optional = _unwrap_optional(hints[field.name])
        if dataclasses.is_dataclass(annotation):
            add_dataclass_arguments(parser, annotation, prefix + field.metadata.get("prefix", ""))
            continue
        if not _has_flag(field):
            continue
        default = getattr(defaults, field.name)
        help_text = field.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": prefix + field.name, "default": default}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is list:
            element = typing.get_args(annotation)[0]
            kwargs.update(
                type=_none_or(element) if optional else element,
                nargs="+",
                metavar=field.metadata.get("metavar", element.__name__.upper()),
            )
            if optional:
                kwargs["action"] = _NoneOrList
        else:
            kwargs["type"] = _none_or(annotation) if optional else annotation
            kwargs["metavar"] = field.metadata.get("metavar", annotation.__name__.upper())
            if "choices" in field.metadata:
                kwargs["choices"] = field.metadata["choices"]
                kwargs.pop("metavar")
        shown_default = "none" if default is None and optional else default
        kwargs["help"] = f"{help_text} (default: {shown_default})"
        group.add_argument(_flag(prefix, field.name), **kwargs)


def flag_destinations(cls: type, prefix: str = "") -> list[str]:
    """The ``dest`` of every flag :func:`add_dataclass_arguments` adds for ``cls``, in order."""
    hints = typing.get_type_hints(cls)
    destinations = []
    for field in dataclasses.fields(cls):
        annotation, _ = _unwrap_optional(hints[field.name])
        if dataclasses.is_dataclass(annotation):
            destinations += flag_destinations(annotation, prefix + field.metadata.get("prefix", ""))
        elif _has_flag(field):
            destinations.append(prefix + field.name)
    return destinations


def dataclass_from_namespace(cls: type[T], namespace: argparse.Namespace, prefix: str = "") -> T:
    """Build ``cls`` from parsed flags added by :func:`add_dataclass_arguments` (settings without a
    flag at their defaults)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        annotation, _ = _unwrap_optional(hints[field.name])
        if dataclasses.is_dataclass(annotation):
            values[field.name] = dataclass_from_namespace(
                annotation, namespace, prefix + field.metadata.get("prefix", "")
            )
        elif _has_flag(field):
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
    """Inverse of :func:`to_dict`, also for records of older releases (see the module docstring).

    Raises:
        TypeError: unknown keys.
        ConfigError: a retired setting away from its inert value.
    """
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    values = dict(values)
    for name, retired in getattr(cls, "RETIRED", {}).items():
        if name in values:
            value = values.pop(name)
            if value != retired.inert:
                raise ConfigError(retired.refusal(value))
    for field in fields:
        if field.name in values:
            continue
        if "older_records" in field.metadata:
            values[field.name] = field.metadata["older_records"]
        elif field.metadata.get("older_records_use") in values:
            values[field.name] = values[field.metadata["older_records_use"]]
    unknown = set(values) - {field.name for field in fields}
    if unknown:
        raise TypeError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
    converted = {}
    for name, value in values.items():
        annotation, _ = _unwrap_optional(hints[name])
        if dataclasses.is_dataclass(annotation):
            converted[name] = from_dict(annotation, value)
        elif annotation is Path and value is not None:
            converted[name] = Path(value)
        elif typing.get_origin(annotation) is list and value is not None:
            element = typing.get_args(annotation)[0]
            converted[name] = [element(item) for item in ([value] if isinstance(value, str) else value)]
        else:
            converted[name] = value
    return cls(**converted)


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Destinations of the flags actually given in ``argv`` (as opposed to left at their default)."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def read_config_file(path: Path) -> dict[Any, Any]:
    """The top-level table of a YAML (.yaml, .yml) or TOML (.toml) file; an empty YAML file is an empty table.

    Raises:
        ConfigFileError: missing, unreadable, of another type, not valid YAML or TOML, or not a table.
    """
    suffix = path.suffix.lower()
    if suffix not in CONFIG_FILE_SUFFIXES:
        raise ConfigFileError(f"{path}: a config file must be YAML (.yaml, .yml) or TOML (.toml), not {suffix!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigFileError(f"{path}: cannot read the config file ({error})") from None
    try:
        values = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigFileError(f"{path}: not valid TOML ({error})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigFileError(f"{path}: not valid YAML ({problem}{where})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigFileError(f"{path}: expected 'flag: value' lines (a table), got a {type(values).__name__}")
    return values


def config_file_values(parser: argparse.ArgumentParser, cls: type, path: Path) -> dict[str, Any]:
    """The settings of a config file as the flags of ``cls`` in ``parser`` would give them, by flag destination.

    Keys are flag names without the leading dashes, with dashes or underscores
    (``encoder-num-layers`` or ``encoder_num_layers``), flat as on the command line; each value
    goes through its flag's type and choices (a YAML null or the word ``none`` is None for an
    optional setting; a switch takes true or false).

    Raises:
        ConfigFileError: the file cannot be read, or names an unknown flag, a flag twice, or a value
            its flag does not take (the message names the file and the key).
    """
    destinations = set(flag_destinations(cls))
    actions = {action.dest: action for action in parser._actions if action.dest in destinations}
    settings: dict[str, Any] = {}
    for key, value in read_config_file(path).items():
        destination = str(key).replace("-", "_")
        if isinstance(value, dict):
            raise ConfigFileError(
                f"{path}: {key} holds a table; write the settings flat, as the flags are named "
                "(e.g. encoder_num_layers: 3)"
            )
        if destination not in actions:
            raise ConfigFileError(f"{path}: unknown setting {key!r} (no flag --{destination.replace('_', '-')})")
        if destination in settings:
            raise ConfigFileError(f"{path}: {key} is set twice")
        settings[destination] = _flag_value(actions[destination], value, f"{path}: {key}")
    return settings


def _flag_value(action: argparse.Action, value: Any, where: str) -> Any:
    """``value`` of a config file converted as its flag converts command-line text; ``where`` names the key."""
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ConfigFileError(f"{where} must be true or false, got {value!r}")
        return value
    kind = VALUE_KINDS.get(action.type.__name__, action.type.__name__)
    if action.nargs == "+":
        items = value if isinstance(value, list) else [value]
        if not items or any(isinstance(item, (bool, list, dict)) or item is None for item in items):
            raise ConfigFileError(f"{where} must be {kind} or a list of them, got {value!r}")
        return [action.type(str(item)) for item in items]
    try:
        if isinstance(value, (bool, list)):
            raise ValueError(value)
        converted = action.type("none" if value is None else str(value))
    except (TypeError, ValueError):
        raise ConfigFileError(f"{where} must be {kind}, got {value!r}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(str(choice) for choice in action.choices)
        raise ConfigFileError(f"{where} must be one of {choices}, got {value!r}")
    return converted
