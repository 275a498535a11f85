"""What the tests share: running commands as a user would, waiting on events, and finding leftover processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

MARK = "SWEEP_TEST_PROCESS"  # set by conftest.py: every process a test starts carries it
APP = Path(__file__).resolve().parent / "plugin" / "app" / "curve.py"  # a Hydra app without torch
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# hydra-optuna-sweeper's grid-sampler scenario for examples/sphere.py, with either sweeper
GRID = """defaults:
  - override hydra/sweeper: {sweeper}
  - override hydra/sweeper/sampler: grid
hydra:
  sweeper:
    direction: minimize
    study_name: sphere
    n_trials: 20
    params:
      x: choice(-1, 1)
      y: range(-1.0, 1.0, step=1)
      z: choice("foo", "bar")
x: 1
y: 1
z: foo
"""


def memory_handle(directions=("maximize",), retries: int = 0):
    """A study handle on an in-memory study, opened, with a seeded random sampler: the sweeper's storage side
    without a database, for tests that drive the scheduler or the handle directly."""
    from sweep.sweeper.storage import Storage
    from sweep.sweeper.study import StudyHandle

    handle = StudyHandle(Storage("memory", None), "unit", list(directions), optuna.samplers.RandomSampler(seed=0),
                         None, None, heartbeat_interval=30, grace_period=120, retries=retries)
    handle.open([])
    return handle


def run_cli(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m module args` as a user would."""
    return run([sys.executable, "-m", module, *args], cwd=cwd, env=env, timeout=timeout)


def run_app(*args: str, cwd: Path, script: Path = APP, env: dict | None = None, timeout: int = 300):
    """Run a Hydra app script (the test app by default) as a user would."""
    return run([sys.executable, str(script), *args], cwd=cwd, env=env, timeout=timeout)


def run(argv: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a command to its end, in its own process group, with a terminal's SIGINT (see start)."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                          start_new_session=True, preexec_fn=_terminal_sigint)


def start(argv: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a command in its own process group, with a default SIGINT as in a terminal (a test runner started in
    the background passes SIGINT down ignored)."""
    return subprocess.Popen(
        argv, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_terminal_sigint)


def _terminal_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(module: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return start([sys.executable, "-m", module, *args], cwd=cwd, env=env)


def start_app(*args: str, cwd: Path, script: Path = APP, env: dict | None = None) -> subprocess.Popen:
    return start([sys.executable, str(script), *args], cwd=cwd, env=env)


def assert_one_line_error(result, *fragments: str, code: int = 2) -> str:
    """A refused input: the exit code, no traceback, and a last line `error: ...` holding every fragment."""
    assert result.returncode == code, (result.returncode, result.stdout[-2000:] + result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for f in fragments:
        assert f in last, last
    return last


def wait_for(condition, what: str, timeout: float = 120, process: subprocess.Popen | None = None):
    """Poll `condition` until it returns something truthy: an event the code exposes (a file, a trial state)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"process ended (code {process.returncode}) before {what}:\n{out[-2000:]}\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def trials(db: Path, name: str) -> list:
    """The study's trials so far; [] while the sweep has not created it."""
    if not db.exists():
        return []
    try:
        return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").trials
    except Exception:  # not created yet
        return []


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in cwd.glob("multirun/**/study.json"))


def children(pid: int) -> list[int]:
    """Live processes whose parent is pid, and theirs (the pool's fork server forks the workers)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == parent and stat[0] != "Z":
                found.append(int(entry))
                frontier.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def marked_processes(running: bytes = b"") -> list[int]:
    """Processes other than this one that carry this test session's mark (and `running` in their command line)."""
    mark = f"{MARK}={os.environ[MARK]}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if state != "Z" and mark in environ.split(b"\0") and running in command:
            found.append(int(entry))
    return found


DRAWER = b"from sweep.sweeper.report import drawer"  # in the command line of a report's plot drawer


def drawers_done(timeout: float = 120) -> None:
    """Wait until no report drawer of this session runs (a drawer holds its sweep folder's report.log open)."""
    wait_for(lambda: not marked_processes(DRAWER), "the report drawers to end", timeout=timeout)


def report_page(sweep_dir: Path, timeout: float = 120) -> str:
    """A sweep's report.html once its plots are in: a sweep's command ends before its plots are drawn."""
    from sweep.sweeper.report import PENDING

    page = sweep_dir / "report.html"
    return wait_for(lambda: page.exists() and PENDING not in (text := page.read_text()) and text,
                    f"the plots of {page}", timeout=timeout)


def install_wheel(tmp_path: Path) -> str:
    """Build the project's wheel from a copy and install it, alone, into a new virtual environment that sees this
    environment's packages (Hydra, Optuna, and torch where it is) through a .pth file: a plain install, as a user
    gets, whether this interpreter is a venv's, a conda env's or the system's. Returns the new python."""
    import shutil
    import sysconfig

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    source = tmp_path / "source"  # setuptools writes its build/ folder into the tree it builds
    shutil.copytree(root, source, ignore=shutil.ignore_patterns(
        ".git", "multirun", "outputs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "results"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("sweep-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # This environment's own packages, and those it sees beyond it (a venv made with --system-site-packages).
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
            *(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))}
    (Path(purelib) / "outer-env.pth").write_text("\n".join(sorted(here)) + "\n")
    installed = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
                               capture_output=True, text=True, env=env)
    assert installed.returncode == 0, installed.stderr
    return python


ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def runnable_blocks(kind: str = "") -> list[tuple[str, dict[str, str], str]]:
    """Every block marked `<!-- runnable -->` (or `<!-- runnable: KIND -->`) in the README and the docs, with the
    files marked `<!-- file: PATH -->` before it in the same page: (page, files, commands)."""
    import re

    found = []
    for page in DOCS:
        files: dict[str, str] = {}
        for m in re.finditer(r"<!-- (file: (\S+)|runnable(?:: (\w+))?) -->\n```[\w-]*\n(.*?)```", page.read_text(), re.S):
            if m.group(2):
                files[m.group(2)] = m.group(4)
            elif (m.group(3) or "") == kind:
                found.append((page.name, dict(files), m.group(4)))
    return found


def run_block(files: dict[str, str], commands: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a docs block as a reader would: its files written, its commands in bash, warnings left on."""
    for name, text in files.items():
        (cwd / name).parent.mkdir(parents=True, exist_ok=True)
        (cwd / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` is this Python
    return subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True)


# asha through the test app, one trial at a time, in this order: the best, the second best (paused at step 1 behind
# the best), then bad ones, whose arrival at step 1 lifts the second best into the rung's top half: it is promoted.
GOOD = "{lr:0.1,width:32},{lr:0.1,width:16}"
BAD = ",".join(f"{{lr:{0.0011 + i / 10000:.4f},width:8}}" for i in range(6))
ASHA = ["hydra/sweeper/pruner=asha", "hydra.sweeper.pruner.reduction_factor=2", "epochs=4", "resumable=true",
        "hydra.sweeper.n_jobs=1"]


def epochs_run(trial) -> list[int]:
    """Every epoch the test app trained for this trial, over all its runs."""
    return [int(line) for line in (Path(trial.user_attrs["run_dir"]) / "epochs_run").read_text().split()]


def check_promotion(result, db: Path) -> None:
    """What a sweep of ASHA with GOOD then BAD must show, whatever the launcher."""
    from optuna.trial import TrialState

    assert result.returncode == 0, result.stderr[-3000:]
    found = trials(db, "curve")
    assert found[0].state == TrialState.COMPLETE and epochs_run(found[0]) == [1, 2, 3, 4]
    second = found[1]
    assert second.system_attrs["sweep:promoted"] >= 1 and "trial 1 promoted past step 1" in result.stdout
    assert epochs_run(second)[:2] == [1, 2]  # resumed after step 1, not from the start
    assert len(epochs_run(second)) == len(set(epochs_run(second)))  # no epoch trained twice
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in found)  # nothing left paused
    never = [t for t in found if t.user_attrs.get("stop_reason", "").endswith("(paused, never promoted)")]
    assert never and all(len(epochs_run(t)) == max(t.intermediate_values) for t in never)
