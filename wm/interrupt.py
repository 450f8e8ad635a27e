"""Ctrl-C that sticks: a stage interrupted by SIGINT (or stopped by SIGTERM: `kill`, a job scheduler) never
commits an output, even when Python swallows the KeyboardInterrupt (it drops one raised inside a weakref
callback or a ``__del__``, prints "Exception ignored in ..." and carries on; measured in about 1 of 4
interrupted collects)."""

from __future__ import annotations

import signal
import sys

_interrupted = 0  # the signal that interrupted this process, 0 while none has


def _on_signal(signum: int, frame: object) -> None:
    global _interrupted
    _interrupted = signum
    raise KeyboardInterrupt


def install_sticky_interrupt() -> None:
    """Record every SIGINT and SIGTERM in a flag that `raise_if_interrupted` honours at the next work item and
    `wm.files.atomic_path` before any commit; the swallowed exception is not printed (the stage prints its one
    line). SIGTERM's default action would kill the stage at once: its worker processes would play out their
    queued episodes as orphans and its temporary files would stay behind."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    default_hook = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            default_hook(unraisable)

    sys.unraisablehook = hook


def raise_if_interrupted() -> None:
    """A safe point in long work (per batch, per episode): raise a Ctrl-C that Python swallowed."""
    if _interrupted:
        raise KeyboardInterrupt


def interrupting_signal() -> signal.Signals:
    """The signal that interrupted this process (SIGINT when a KeyboardInterrupt came from elsewhere)."""
    return signal.Signals(_interrupted or signal.SIGINT)
