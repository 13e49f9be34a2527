"""Shared plumbing of the command-line entry points: parsers, input checks, one-line error exits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pairwise_vae import __version__
from pairwise_vae.config import ConfigError, add_dataclass_arguments, dataclass_from_namespace
from pairwise_vae.data.records import DataError
from pairwise_vae.training.checkpoint import CheckpointError

T = TypeVar("T")
USER_ERRORS = (DataError, CheckpointError, ConfigError)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a bad input or setting into one line on stderr and exit code 1 (2 for a bad config file, a usage
    error like a bad flag; no traceback)."""
    try:
        yield
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 1))


def parse_checkpoint_command(
    prog: str, description: str, config_class: type[T], argv: list[str] | None
) -> tuple[Path, T]:
    """Parse '<prog> CHECKPOINT [flags of config_class]'."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="a pairwise_vae checkpoint (best.pt or last.pt of a run)")
    parser.add_argument("--version", action="version", version=f"pairwise_vae {__version__}")
    add_dataclass_arguments(parser, config_class)
    namespace = parser.parse_args(argv)
    return namespace.checkpoint, dataclass_from_namespace(config_class, namespace)


def check_inference_request(config: Any, outputs: list[Path], counts: tuple[str, ...]) -> None:
    """Refuse outputs that exist (nothing is overwritten) and counts below 1."""
    existing = [str(path) for path in outputs if path.exists()]
    if existing:
        raise ConfigError(f"{existing[0]}: already exists; choose another --output (nothing was overwritten)")
    for name in counts:
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
