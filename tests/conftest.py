from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from helpers import MARK, marked_processes

# Every process a test starts carries this mark in its environment (workers of a sweep inherit it), so the check
# below finds whatever a test left running, even a worker whose parent is gone.
os.environ[MARK] = uuid.uuid4().hex


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """A test must not leave a process running: whatever it started is killed, and the test fails."""
    yield
    if not os.path.isdir("/proc"):
        return
    deadline = time.monotonic() + 15  # workers of a killed sweep get a moment to notice
    left = marked_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = marked_processes()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"the test left {len(left)} process(es) running: {left}"
