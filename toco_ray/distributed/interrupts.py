"""Ctrl-C and SIGTERM while a run trains: the driver ends it as ``KILLED`` and exits 130 / 143 with one line.

Left to Ray, neither ends well: ``fit()`` called from the main thread installs Ray Train's own SIGINT handler, which
aborts the controller and then leaves the driver with a ``SystemExit(1)`` and nothing printed, and Ray's core worker
answers SIGTERM with a C++ stack dump and exit status 134. The MLflow run is left ``FAILED`` either way.

:func:`fit_interruptibly` therefore calls ``fit()`` in a helper thread (Ray installs no handler there, as inside a
Tune trial) and keeps the main thread for the signals: SIGINT or SIGTERM raises :class:`TrainingInterrupted` in it
at once. Whoever catches it marks the run and exits; interpreter exit then shuts Ray down (a local cluster stops; on
a shared cluster the driver's actors go with it). A checkpoint cut off mid-copy is never used: only committed ones
count (``toco_ray.checkpointing``).

Example:
    >>> try:
    ...     result = fit_interruptibly(trainer.fit)
    ... except TrainingInterrupted as err:
    ...     sys.exit(err.exit_code)        # 130 after Ctrl-C, 143 after SIGTERM
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by a signal; ``exit_code`` is what a shell reports for it (128 + signal number)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def fit_interruptibly(fit: Callable[[], T]) -> T:
    """``fit()``, with SIGINT and SIGTERM raising :class:`TrainingInterrupted` in the calling thread.

    Outside the main thread (a Tune trial, where signals cannot be handled) it simply calls ``fit()``.
    """
    if threading.current_thread() is not threading.main_thread():
        return fit()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = fit()
        except BaseException as err:  # handed to the main thread below
            outcome["error"] = err

    worker = threading.Thread(target=run, name="train-fit", daemon=True)  # daemon: an interrupt need not wait
    with signals_raise():
        worker.start()
        worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[list[int]]:
    """Within the block, SIGTERM is turned into the SIGINT a Ctrl-C sends (Ray Tune stops a sweep gracefully on
    SIGINT, and Ray's core worker would abort the driver on SIGTERM). Yields a list that records each SIGTERM taken.

    Install it after ``ray.init`` (which installs Ray's own SIGTERM handler), in the main thread.
    """
    taken: list[int] = []

    def forward(signum, frame):
        taken.append(signum)
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield taken
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`TrainingInterrupted`; the previous handlers come back
    after it."""

    def interrupt(signum, frame):
        raise TrainingInterrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
