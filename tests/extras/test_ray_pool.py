"""hydra/launcher=ray_pool on a two-node Ray cluster on this machine (ray.cluster_utils.Cluster): trials land on both
nodes, refill is asynchronous, workers prune through the study, a killed Ray worker fails only its trial, and
stopping the sweep cancels what runs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from optuna.trial import TrialState

from helpers import (ASHA, BAD, GOOD, MARK, alive, assert_one_line_error, check_promotion, children,
                     marked_processes, run_app, start_app, trials, wait_for)

ray = pytest.importorskip("ray")  # the `ray` extra; .ci/run installs it
pytestmark = pytest.mark.xdist_group("ray")  # one cluster at a time on a 2-core machine

STUDY = "curve"


@pytest.fixture(scope="module")
def cluster():
    """Two raylets, one CPU each. They outlive single tests, so they carry a mark of their own, and the module checks
    that none of them outlives the cluster."""
    from ray.cluster_utils import Cluster

    test_mark = os.environ[MARK]
    os.environ[MARK] = f"{test_mark}-cluster"
    try:
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
    finally:
        os.environ[MARK] = test_mark
    yield c.address
    c.shutdown()
    os.environ[MARK] = f"{test_mark}-cluster"
    try:
        wait_for(lambda: not marked_processes(), "the cluster's processes to end", timeout=60)
    finally:
        os.environ[MARK] = test_mark


def _db(cwd: Path) -> Path:
    return cwd / "multirun" / "studies" / f"{STUDY}.db"


def test_asha_pauses_and_promotes_trials_on_ray(cluster, tmp_path):
    result = run_app("--multirun", "hydra/launcher=ray_pool", f"hydra.launcher.address={cluster}", *ASHA,
                     "hydra.sweeper.n_trials=8", f"hydra.sweeper.enqueue=[{GOOD},{BAD}]", cwd=tmp_path)
    check_promotion(result, _db(tmp_path))


def test_trials_spread_over_both_nodes_refill_and_prune(cluster, tmp_path):
    # Trial 0 waits until three trials have started: with two slots that needs a refill while it runs.
    result = run_app("--multirun", "hydra/launcher=ray_pool", f"hydra.launcher.address={cluster}",
                     "hydra.sweeper.n_trials=4", "barrier=choice(0,3)", f"barrier_dir={tmp_path / 'b'}",
                     "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1",
                     "hydra.sweeper.enqueue=[{barrier:3,lr:0.1},{barrier:0,lr:0.2},{barrier:0,lr:0.3},"
                     "{barrier:0,lr:0.001}]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = {t.number: t for t in trials(_db(tmp_path), STUDY)}
    assert "Ray: 2 node(s), 2 CPU(s), 0 GPU(s); 2 trial(s) at a time" in result.stdout + result.stderr
    assert found[0].user_attrs["node"] != found[1].user_attrs["node"]  # they ran at once, one CPU per node
    assert all(found[0].datetime_complete > found[n].datetime_start for n in (1, 2))
    assert found[3].state == TrialState.PRUNED and found[3].user_attrs["stop_reason"] == "pruned at step 1 by median"
    assert all(t.user_attrs["gpus"] == "" for t in found.values())


def test_a_killed_ray_worker_fails_one_trial_and_stopping_the_sweep_cancels_the_rest(cluster, tmp_path):
    proc = start_app("--multirun", "hydra/launcher=ray_pool", f"hydra.launcher.address={cluster}",
                     "hydra.sweeper.n_trials=3", "epochs=100000", "epoch_seconds=0.05",
                     "hydra.sweeper.max_failure_rate=1", cwd=tmp_path)
    pid_of = lambda n: int(next(iter(tmp_path.glob(f"multirun/*/*/{n}/pid"))).read_text())  # noqa: E731
    wait_for(lambda: sum(bool(t.intermediate_values) for t in trials(_db(tmp_path), STUDY)) == 2, "two trials training",
             process=proc)
    os.kill(pid_of(0), signal.SIGKILL)
    wait_for(lambda: any(t.number == 2 and t.intermediate_values for t in trials(_db(tmp_path), STUDY)),
             "trial 2 training in the freed slot", process=proc)
    running = [pid_of(1), pid_of(2)]
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    found = {t.number: t for t in trials(_db(tmp_path), STUDY)}
    assert found[0].state == TrialState.FAIL and found[0].user_attrs["fail_reason"].startswith(
        "WorkerDied: Ray worker lost: WorkerCrashedError")
    assert [found[n].user_attrs["fail_reason"] for n in (1, 2)] == ["sweep interrupted"] * 2
    wait_for(lambda: not [p for p in running if alive(p)], "the cancelled tasks' workers to end", timeout=60)


def test_ray_settings_that_cannot_work_are_one_line(cluster, tmp_path):
    memory = run_app("--multirun", "hydra/launcher=ray_pool", "hydra.sweeper.storage=null", cwd=tmp_path)
    assert_one_line_error(memory, "hydra.sweeper.storage=null", "hydra/launcher=ray_pool cannot reach", "postgresql")
    nowhere = run_app("--multirun", "hydra/launcher=ray_pool", "hydra.launcher.address=127.0.0.1:1", cwd=tmp_path)
    assert_one_line_error(nowhere, "hydra.launcher.address='127.0.0.1:1': no Ray cluster answers there")
    greedy = run_app("--multirun", "hydra/launcher=ray_pool", f"hydra.launcher.address={cluster}",
                     "hydra.launcher.num_gpus_per_trial=1", cwd=tmp_path)
    assert_one_line_error(greedy, "hydra.launcher.num_gpus_per_trial=1: the Ray cluster has 0 GPU(s)")
    hungry = run_app("--multirun", "hydra/launcher=ray_pool", f"hydra.launcher.address={cluster}",
                     "hydra.launcher.num_cpus_per_trial=64", cwd=tmp_path)
    assert_one_line_error(hungry, "hydra.launcher.num_cpus_per_trial=64: the Ray cluster has 2 CPU(s)")


def test_a_ray_address_never_shows_its_password(tmp_path):
    literal = run_app("--multirun", "hydra/launcher=ray_pool", "hydra.launcher.address=ray://admin:S3cret@127.0.0.1:1",
                      cwd=tmp_path)
    line = assert_one_line_error(literal, "hydra.launcher.address", "holds a password", "${oc.env:VAR}")
    assert "S3cret" not in literal.stdout + literal.stderr and "S3cret" not in line
    referenced = run_app("--multirun", "hydra/launcher=ray_pool",
                         "hydra.launcher.address=ray://admin:${oc.env:RAY_PW}@127.0.0.1:1", cwd=tmp_path,
                         env={"RAY_PW": "Hunter2"})
    assert_one_line_error(referenced, "hydra.launcher.address", "no Ray cluster answers there")
    assert "Hunter2" not in referenced.stdout + referenced.stderr
    assert not [p for p in tmp_path.rglob("*.yaml") if "S3cret" in p.read_text() or "Hunter2" in p.read_text()]


def test_address_null_starts_a_ray_of_its_own_even_beside_another(cluster, tmp_path):
    result = run_app("--multirun", "hydra/launcher=ray_pool", "hydra.sweeper.n_trials=2", cwd=tmp_path,
                     env={"RAY_ADDRESS": cluster})  # another Ray on the machine, which ray.init() would join
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t.state for t in trials(_db(tmp_path), STUDY)] == [TrialState.COMPLETE] * 2


def test_an_address_that_accepts_and_never_answers_is_one_line_within_the_time_limit(tmp_path):
    import socket
    import threading

    silent = socket.create_server(("127.0.0.1", 0))
    held = []
    threading.Thread(target=lambda: [held.append(silent.accept()) for _ in range(64)], daemon=True).start()
    port = silent.getsockname()[1]
    result = run_app("--multirun", "hydra/launcher=ray_pool", f"hydra.launcher.address=127.0.0.1:{port}",
                     "hydra.launcher.connect_timeout=5", cwd=tmp_path, timeout=120)
    assert_one_line_error(result, f"hydra.launcher.address='127.0.0.1:{port}'", "no answer", "connect_timeout=5")
    silent.close()


def _raylet_started(pid: int) -> bool:
    for child in children(pid):
        try:
            if b"raylet" in Path(f"/proc/{child}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


@pytest.mark.parametrize("moment", ["while its Ray starts", "while trials run"])
def test_the_ray_a_killed_sweep_started_ends_with_it(tmp_path, moment):
    """SIGKILL, which nothing in the sweep can catch: its watchdog ends the Ray it started, agents included (they
    may start just as the raylet dies, with their titles written over their environment)."""
    proc = start_app("--multirun", "hydra/launcher=ray_pool", "hydra.sweeper.n_trials=2", "epochs=100000",
                     "epoch_seconds=0.05", cwd=tmp_path)
    if moment == "while its Ray starts":
        wait_for(lambda: _raylet_started(proc.pid), "Ray's raylet to start", process=proc)
    else:
        wait_for(lambda: sum(bool(t.intermediate_values) for t in trials(_db(tmp_path), STUDY)) >= 1,
                 "a trial training", process=proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    wait_for(lambda: not marked_processes(), "Ray's processes (raylet, GCS, agents, workers) to end", timeout=60)
