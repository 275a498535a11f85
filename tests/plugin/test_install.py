"""A plain (non-editable) install of the wheel, used from a folder far from this checkout, as a user would."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_the_plugin_its_configs_and_the_app(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # Built from a copy: setuptools writes its build/ folder into the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "multirun", "outputs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "results"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("sweep-*.whl")
    # A new environment whose own site-packages hold only this wheel; torch, Hydra and Optuna come from the
    # system's (installing torch again would copy 5.5 GB).
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    installed = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True, env=env)
    assert installed.returncode == 0, installed.stderr

    app = tmp_path / "app"
    (app / "conf").mkdir(parents=True)
    for name in ("sphere", "pytorch_loop"):
        shutil.copy(ROOT / "examples" / f"{name}.py", app)
        shutil.copy(ROOT / "examples" / "conf" / f"{name}.yaml", app / "conf")

    def run(*args):
        return subprocess.run([python, *args], cwd=app, capture_output=True, text=True, env=env, timeout=600,
                              start_new_session=True)

    where = run("-c", "import json, sweep, importlib.metadata as m; d = m.distribution('sweep'); print(json.dumps("
                "[sweep.__file__, sorted(e.value for e in d.entry_points), "
                "sorted(str(f) for f in d.files if str(f).startswith('sweep/conf/'))]))")
    assert where.returncode == 0, where.stderr
    module, entry_points, conf_files = json.loads(where.stdout)
    assert module.startswith(str(tmp_path / "venv")) and not module.startswith(str(ROOT))
    assert {"sweep.launcher:PoolLauncher", "sweep.plugin:OptunaSweeper", "sweep.train:cli"} <= set(entry_points)
    assert "sweep/conf/config.yaml" in conf_files and "sweep/conf/search/digits.yaml" in conf_files

    # The same seeded sampler finds what hydra-optuna-sweeper finds, trial for trial.
    ours = run("sphere.py", "--multirun", "hydra.sweeper.n_trials=10", f"hydra.sweep.dir={tmp_path / 'ours'}")
    theirs = run("sphere.py", "--multirun", "hydra.sweeper.n_trials=10", "hydra/sweeper=optuna",
                 f"hydra.sweep.dir={tmp_path / 'theirs'}")
    assert ours.returncode == 0 and theirs.returncode == 0, ours.stderr + theirs.stderr
    found = OmegaConf.load(tmp_path / "ours" / "optimization_results.yaml")
    assert found == OmegaConf.load(tmp_path / "theirs" / "optimization_results.yaml") and found.best_value <= 25

    loop = run("pytorch_loop.py", "--multirun", "hydra.sweeper.n_trials=6", "epochs=4", "hydra.sweeper.report=false",
               "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0")
    assert loop.returncode == 0, loop.stderr
    study = optuna.load_study(study_name="spirals", storage=f"sqlite:///{app}/multirun/studies/spirals.db")
    assert len(study.trials) == 6 and any(t.state == TrialState.PRUNED for t in study.trials)

    single = run("-m", "sweep.train", "data=digits", "trainer.epochs=1", f"data.cache_dir={tmp_path / 'cache'}")
    assert single.returncode == 0, single.stderr
    assert "val_accuracy" in (single.stdout + single.stderr)
