"""Ctrl-C and SIGTERM while a sweep runs: SIGTERM stops it as Ctrl-C does, the host process gets its handlers back
afterwards, a second interrupt cannot cut the clean-up short, and none lands inside a step that must not be split.
Handlers can only be set from the main thread; elsewhere (a sweep started from a thread) these do nothing."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _main() -> bool:
    return threading.current_thread() is threading.main_thread()


def take() -> dict:
    """From now until the sweep ends, SIGTERM stops it as Ctrl-C does: the host process's handlers, to give back."""
    saved = {s: signal.getsignal(s) for s in SIGNALS} if _main() else {}
    stop_on_sigterm()
    return saved


def give_back(saved: dict) -> None:
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@contextlib.contextmanager
def owned(saved: dict | None = None):
    """While a sweep runs (from its setup, when that took them), SIGTERM stops it as Ctrl-C does; afterwards the
    host process gets both handlers back."""
    saved = take() if saved is None else saved
    try:
        yield
    finally:
        give_back(saved)


def stop_on_sigterm() -> None:
    if _main():
        signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum, frame):
    raise KeyboardInterrupt


def ignore() -> None:
    """A second Ctrl-C while the sweep cleans up is noted, not obeyed."""
    if not _main():
        return

    def note(signum, frame):
        log.warning("Already stopping: cleaning up, then exiting")

    for sig in SIGNALS:
        signal.signal(sig, note)


@contextlib.contextmanager
def deferred():
    """Ctrl-C (or SIGTERM) during the block takes effect as it ends, through the handler it would have met. Asking
    the study for a trial makes it RUNNING in storage before its number comes back: an interrupt in between would
    leave it RUNNING for good, owned by no sweep."""
    if not _main():
        yield
        return
    got: list[int] = []
    saved = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if got:
            handler = signal.getsignal(got[0])
            if callable(handler):
                handler(got[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(got[0])
