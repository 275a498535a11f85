"""The scheduler and the pool launcher through a real sweep of the test app: asynchronous refill, GPU slots, where
each trial ran, and what a killed worker, sys.exit, a bad return value or Ctrl-C do. Every wait is on an event (a
trial's state, a file written, a line printed), never on a sleep."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from helpers import assert_one_line_error, children, run_app, start_app, trials, wait_for

STUDY = "curve"


def _db(cwd: Path) -> Path:
    return cwd / "multirun" / "studies" / f"{STUDY}.db"


def _trials(cwd: Path) -> dict:
    return {t.number: t for t in trials(_db(cwd), STUDY)}


def _spans(run_dirs: list[Path]) -> list[tuple[float, float]]:
    return [tuple(float(x) for x in (d / "span").read_text().split()) for d in run_dirs]


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def _writer_of(path: Path) -> int:
    """The worker whose stdout is `path` (a pool worker points it at its trial's console.log while it runs)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/fd/1") == str(path):
                    return int(entry)
            except OSError:
                continue
    return 0


def test_the_next_trial_starts_while_a_long_one_runs_and_each_records_where_it_ran(tmp_path):
    # Trial 0 waits until four trials have started: only a launcher that refills as each trial ends gets there.
    result = run_app("--multirun", "hydra.sweeper.n_trials=4", "barrier=choice(0,4)", f"barrier_dir={tmp_path / 'b'}",
                     "hydra.sweeper.enqueue=[{barrier:4,lr:0.1},{barrier:0,lr:0.2},{barrier:0,lr:0.3},{barrier:0,lr:0.4}]",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = _trials(tmp_path)
    assert [t.state for t in found.values()] == [TrialState.COMPLETE] * 4
    assert all(found[0].datetime_complete > found[n].datetime_start for n in (1, 2, 3))
    for t in found.values():
        assert t.user_attrs["node"] == socket.gethostname() and t.user_attrs["gpus"] == ""
        assert t.user_attrs["startup_seconds"] >= 0 and t.user_attrs["run_seconds"] > 0
        assert len(t.intermediate_values) == 5 and t.user_attrs["note"].startswith("pid ")
    assert "Starting 2 worker process(es), 1 CPU thread(s) each" in result.stdout + result.stderr


def test_gpu_slots_pin_each_worker_and_never_overload_a_gpu(tmp_path):
    # Two "GPUs" by id (none needs to exist), two trials on each: four workers, each pinned with CUDA_VISIBLE_DEVICES.
    result = run_app("--multirun", "hydra.launcher.gpus=[0,1]", "hydra.launcher.trials_per_gpu=2",
                     "hydra.sweeper.n_trials=8", "barrier=choice(0,4)", f"barrier_dir={tmp_path / 'b'}",
                     "hydra.sweeper.enqueue=[{barrier:4,lr:0.1},{barrier:4,lr:0.2},{barrier:4,lr:0.3},{barrier:4,lr:0.4}]", "epochs=3",
                     "epoch_seconds=0.05", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = _trials(tmp_path)
    assert len(found) == 8 and all(t.state == TrialState.COMPLETE for t in found.values())
    assert Counter(found[n].user_attrs["gpus"] for n in range(4)) == {"0": 2, "1": 2}  # all four ran at once
    for gpu in ("0", "1"):
        runs = [Path(t.user_attrs["run_dir"]) for t in found.values() if t.user_attrs["gpus"] == gpu]
        assert _max_overlap(_spans(runs)) <= 2
    assert "Starting 4 worker process(es) on GPU(s) 0,1, 2 trial(s) per GPU" in result.stdout + result.stderr


def test_the_sweeper_asks_for_workers_and_the_pool_answers_with_its_slots(monkeypatch):
    from sweep.launchers.pool import PoolLauncher, visible_gpus

    pool = PoolLauncher(gpus=[0, 1], trials_per_gpu=2)
    pool.plan(3)  # fewer than the GPU slots: still spread over the GPUs
    assert pool.slots == 3 and pool.slot_gpus == ["0", "1", "0"]
    pool.plan(8)  # more than the GPU slots: the GPUs' capacity wins
    assert pool.slots == 4
    pool.plan(None)  # null: the whole capacity
    assert pool.slots == 4
    pool.plan(None, at_most=1)  # never more workers than trials
    assert pool.slots == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    auto = PoolLauncher()  # gpus: null means every visible GPU
    auto.plan(None)
    assert auto.slot_gpus == ["2", "3"] and auto.threads >= 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: a machine without NVIDIA's driver
    cpu = PoolLauncher()
    cpu.plan(None)
    assert cpu.slot_gpus == ["", ""] and cpu.slots == 2  # no capacity on CPUs: 2, as upstream's n_jobs
    cpu.plan(40, at_most=2)  # 40 asked, 2 trials: 2 workers
    assert cpu.slots == 2


def test_a_killed_worker_costs_one_trial_and_its_replacement_takes_the_same_gpu(tmp_path):
    """What an out-of-memory kill looks like: kill -9 on one of two workers, each on its own GPU."""
    proc = start_app("--multirun", "hydra.launcher.gpus=[0,1]", "hydra.sweeper.n_trials=3", "epochs=choice(2,100000)",
                     "hydra.sweeper.max_failure_rate=0.5",
                     "epoch_seconds=0.05", "hydra.sweeper.enqueue=[{epochs:100000,lr:0.1},{epochs:100000,lr:0.2},{epochs:2,lr:0.3}]",
                     cwd=tmp_path)
    wait_for(lambda: len([t for t in _trials(tmp_path).values() if t.intermediate_values]) == 2, "two trials training",
             process=proc)
    (run,) = [p.parent for p in tmp_path.glob("multirun/*/*/1/console.log")]
    victim = wait_for(lambda: _writer_of(run / "console.log"), "trial 1's worker", process=proc)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: _trials(tmp_path).get(2) and _trials(tmp_path)[2].state == TrialState.COMPLETE,
             "trial 2 to complete on the replacement worker", process=proc)
    proc.terminate()  # trial 0 would run forever
    out, err = proc.communicate(timeout=120)
    found = _trials(tmp_path)
    assert found[1].state == TrialState.FAIL and found[1].user_attrs["fail_reason"] == "WorkerDied: worker died: signal 9"
    gpu = found[1].user_attrs["gpus"]
    assert gpu in ("0", "1") and found[2].user_attrs["gpus"] == gpu  # the same GPU slot
    assert found[0].user_attrs["gpus"] == {"0": "1", "1": "0"}[gpu]
    assert found[0].state == TrialState.FAIL and found[0].user_attrs["fail_reason"] == "sweep interrupted"
    assert f"Trial #1: worker died: signal 9; starting a new worker on GPU {gpu}" in out + err
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: sweep interrupted; rerun the same command to resume the study"


@pytest.mark.parametrize("launcher", ["pool", "basic"])
def test_a_task_that_calls_sys_exit_fails_its_trial_and_leaves_nothing_running(tmp_path, launcher):
    result = run_app("--multirun", f"hydra/launcher={launcher}", "hydra.sweeper.n_trials=2", "exit_code=3",
                     "hydra.sweeper.max_failure_rate=1", cwd=tmp_path)
    assert_one_line_error(result, "no trial completed")
    found = _trials(tmp_path)
    assert len(found) == 2 and all(t.state == TrialState.FAIL for t in found.values())
    assert {t.user_attrs["fail_reason"] for t in found.values()} == {"RuntimeError: the task called sys.exit(3)"}


@pytest.mark.parametrize("value, shown", [("'0.5'", "'0.5'"), ("true", "True")])
def test_a_string_or_a_bool_is_not_an_objective_value(tmp_path, value, shown):
    result = run_app("--multirun", "hydra.sweeper.n_trials=1", f"returns={value}", cwd=tmp_path)
    assert_one_line_error(result, f"the task returned {shown}, expected a number")
    (t,) = _trials(tmp_path).values()
    assert t.state == TrialState.FAIL


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_sweep_fails_its_trials_says_so_in_one_line_and_can_resume(tmp_path, how):
    proc = start_app("--multirun", "hydra.sweeper.n_trials=4", "epochs=100000", "epoch_seconds=0.05",
                     "hydra.sweeper.report=true", cwd=tmp_path)
    wait_for(lambda: len([t for t in _trials(tmp_path).values() if t.intermediate_values]) == 2, "two trials training",
             process=proc)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the whole process group
    else:
        proc.terminate()  # `kill PID`: the sweep process alone
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "error: sweep interrupted; rerun the same command to resume the study"
    found = _trials(tmp_path)
    assert len(found) == 2 and all(t.user_attrs["fail_reason"] == "sweep interrupted" for t in found.values())
    assert list(tmp_path.glob("multirun/*/*/report.html"))
    again = run_app("--multirun", "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert again.returncode == 0 and "2 earlier trial(s)" in again.stdout + again.stderr


def test_a_second_ctrl_c_does_not_cut_the_clean_up_short(tmp_path):
    proc = start_app("--multirun", "hydra.sweeper.n_trials=2", "epochs=100000", "epoch_seconds=0.05", cwd=tmp_path)
    wait_for(lambda: any(t.intermediate_values for t in _trials(tmp_path).values()), "a trial training", process=proc)
    lines: list[str] = []
    readers = [threading.Thread(target=lambda s=s: lines.extend(s), daemon=True) for s in (proc.stdout, proc.stderr)]
    for reader in readers:
        reader.start()
    os.killpg(proc.pid, signal.SIGINT)
    wait_for(lambda: any("Interrupted" in line for line in lines), "the sweep to start cleaning up")
    os.killpg(proc.pid, signal.SIGINT)  # impatient user
    proc.wait(timeout=120)
    for reader in readers:
        reader.join(timeout=10)
    assert not any("Traceback" in line for line in lines), lines
    assert proc.returncode == 130 and all(t.state == TrialState.FAIL for t in _trials(tmp_path).values()), "".join(lines)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_sweep_while_its_pool_starts_is_one_line_and_leaves_no_process(tmp_path, signum):
    proc = start_app("--multirun", "hydra.sweeper.n_trials=2", "epochs=100000", "epoch_seconds=0.05", cwd=tmp_path)
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True),
               threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    wait_for(lambda: any("Starting 2 worker process(es)" in line for line in out + err), "the pool to start")
    helpers = children(proc.pid)
    (os.killpg if signum == signal.SIGINT else os.kill)(proc.pid, signum)
    proc.wait(timeout=120)
    for reader in readers:
        reader.join(timeout=10)
    if signum != signal.SIGKILL:
        assert proc.returncode == 130 and not any("Traceback" in line for line in out + err), out + err
        assert err[-1].startswith("error: ") and "interrupted" in err[-1]
    # Workers, the fork server and the resource tracker go with the sweep (the autouse fixture also checks this).
    wait_for(lambda: not [p for p in helpers if os.path.exists(f"/proc/{p}") and _not_zombie(p)], "helpers to exit",
             timeout=30)


def test_a_worker_whose_sweep_goes_away_while_it_starts_exits_without_a_word(capfd):
    # A sweep stopped mid-start-up may drop a worker's pipe before sending it the task; the worker's stderr is the
    # user's terminal, where the sweep's last line must stay its own one-line error.
    import multiprocessing

    from sweep.launchers.pool import _stop_fork_server, _worker_main

    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    lifeline, kept = ctx.Pipe(duplex=False)  # kept open: the worker must end by itself, not by the lifeline
    proc = ctx.Process(target=_worker_main, args=(there, lifeline, ("", 1)))
    proc.start()
    there.close()
    here.close()  # the sweep goes away before the task reaches the worker
    proc.join(timeout=120)
    kept.close()
    _stop_fork_server()  # and spawn's resource tracker with it
    assert proc.exitcode == 0
    assert capfd.readouterr().err == ""


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_sweep_gives_its_host_process_both_signal_handlers_back(tmp_path):
    host = tmp_path / "host.py"
    host.write_text("""
import signal, sys
import hydra

@hydra.main(config_path=None, config_name=None, **({"version_base": None} if hydra.__version__.startswith("1.3") else {}))
def main(cfg):
    return float(cfg.x)

def mine(signum, frame):
    pass

signal.signal(signal.SIGINT, mine)
signal.signal(signal.SIGTERM, mine)
sys.argv = ["host.py", "--multirun", "hydra/sweeper=sweep", "+x=choice(1,2)", "hydra.sweeper.n_trials=1"]
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
print(signal.getsignal(signal.SIGINT) is mine, signal.getsignal(signal.SIGTERM) is mine)
""")
    result = run_app(cwd=tmp_path, script=host)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True True"


def test_an_interrupted_sweep_leaves_its_host_process_ctrl_c_working(tmp_path):
    host = tmp_path / "host.py"
    host.write_text("""
import os, signal, sys
import hydra

@hydra.main(config_path=None, config_name=None, **({"version_base": None} if hydra.__version__.startswith("1.3") else {}))
def main(cfg):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the trial runs (the basic launcher runs it in this process)
    return float(cfg.x)

sys.argv = ["host.py", "--multirun", "hydra/sweeper=sweep", "hydra/launcher=basic", "+x=choice(1,2)",
            "hydra.sweeper.n_trials=1"]
try:
    main()
except SystemExit as e:
    print("exit", e.code)
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
""")
    result = run_app(cwd=tmp_path, script=host)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-2:] == ["exit 130", "True"], result.stdout + result.stderr


def test_a_trial_that_breaks_its_worker_costs_no_later_trial(tmp_path):
    # One worker runs all three; the first leaves it with no stdout or stderr, in /, with a changed environment.
    result = run_app("--multirun", "hydra.sweeper.n_jobs=1", "hydra.sweeper.n_trials=3", "break_trial=0",
                     "print=hello", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = _trials(tmp_path)
    assert [t.state for t in found.values()] == [TrialState.COMPLETE] * 3
    assert [found[n].user_attrs["env"] for n in (1, 2)] == ["", ""]
    assert all("hello" in (Path(t.user_attrs["run_dir"]) / "console.log").read_text() for t in found.values())


def test_a_trial_that_forks_children_does_not_keep_the_stopped_sweep_alive(tmp_path):
    proc = start_app("--multirun", "hydra.sweeper.n_trials=2", "fork_children=10", "epochs=100000",
                     "epoch_seconds=0.05", cwd=tmp_path)
    wait_for(lambda: len([t for t in _trials(tmp_path).values() if t.intermediate_values]) == 2, "two trials training",
             process=proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert all(t.state == TrialState.FAIL for t in _trials(tmp_path).values())
    # The forked children went with their workers: the fixture fails the test if any is left.


def test_no_more_workers_start_than_trials_can_use(tmp_path):
    result = run_app("--multirun", "hydra.sweeper.n_jobs=40", "hydra.sweeper.n_trials=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Starting 2 worker process(es)" in result.stdout + result.stderr


def test_the_modules_a_task_names_are_imported_once_by_the_workers_server(tmp_path):
    # An app that imports its heavy library inside the task names it in SWEEP_PRELOAD: the fork server imports it
    # once, every worker it forks finds it there, and the sweep's own process never imports it.
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "heavy_lib.py").write_text(f"import os\nopen(os.path.join({str(marks)!r}, f'import-{{os.getpid()}}'), 'w').close()\n")
    app = tmp_path / "lazy_app.py"
    app.write_text(
        "import os\n"
        "import hydra\n"
        "HYDRA_DEFAULTS = {'version_base': None} if hydra.__version__.startswith('1.3') else {}\n"
        "SWEEP_PRELOAD = ('heavy_lib',)\n"
        "@hydra.main(config_path=None, config_name=None, **HYDRA_DEFAULTS)\n"
        "def main(cfg) -> float:\n"
        "    import heavy_lib  # noqa: F401\n"
        f"    with open(os.path.join({str(marks)!r}, f'worker-{{os.getpid()}}'), 'w') as f:\n"
        "        f.write(str(os.getppid()))\n"
        "    return float(cfg.x)\n"
        "if __name__ == '__main__':\n"
        "    main()\n")
    result = run_app("--multirun", "hydra/sweeper=sweep", "hydra/launcher=pool", "+x=range(0,4)",
                     "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "hydra.sweeper.report=false",
                     f"hydra.sweeper.storage=sqlite:///{tmp_path / 'lazy.db'}", "hydra.sweeper.study_name=lazy",
                     cwd=tmp_path, script=app)
    assert result.returncode == 0, result.stderr
    importers = [m.name.split("-")[1] for m in marks.glob("import-*")]
    parents = {w.read_text() for w in marks.glob("worker-*")}
    assert len(importers) == 1 and parents == set(importers), (importers, parents)
    assert len([t for t in trials(tmp_path / "lazy.db", "lazy") if t.state == TrialState.COMPLETE]) == 4
