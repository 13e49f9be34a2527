"""How training stops: SIGINT/SIGTERM as a flag (:class:`StopRequested`), and how a run ended (:class:`Outcome`)."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any, Literal


class StopRequested:
    """Turns SIGINT/SIGTERM into a flag the training loop checks after each step.

    A second signal interrupts at once, unless ``patient``: the ranks of a data-parallel run
    get each signal twice (from the terminal and from their launcher) and must reach the step at
    which they agree to stop.
    """

    def __init__(self, patient: bool = False) -> None:
        self.signal_name: str | None = None
        self.patient = patient
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name is not None and not self.patient:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.signal_name is not None


@dataclass(frozen=True)
class Outcome:
    """How training ended: ``finished`` (all epochs, the schedule's end or the ``--max-minutes``
    deadline), ``stopped`` (a signal, named if this rank got it) or ``diverged`` (too many
    consecutive non-finite steps)."""

    kind: Literal["finished", "stopped", "diverged"]
    signal_name: str | None = None
