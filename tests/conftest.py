from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from helpers import MARK, drawers_done, marked_processes

# Every process a test starts carries this mark in its environment (workers of a sweep inherit it), so the check
# below finds whatever a test left running, even a worker whose parent is gone.
os.environ[MARK] = uuid.uuid4().hex


SUITES_BY_DEFAULT = ("test_sweep_1_job[", "test_sweep_2_jobs_2_batches[", "test_custom_task_name[")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Hydra's suites on ray_pool and slurm_pool: one behaviour of each suite by default, the rest `slow`."""
    for item in items:
        if "test_launcher_suites.py::Test" in item.nodeid and not item.name.startswith(SUITES_BY_DEFAULT):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """A test must not leave a process running: whatever it started is killed, and the test fails."""
    yield
    if not os.path.isdir("/proc"):
        return
    # A sweep's report draws its plots after the command ends, in a process of its own: that is work, not a leak.
    try:
        drawers_done()
    except AssertionError:
        pass  # left to the check below
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
