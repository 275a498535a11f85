"""A plain (non-editable) install of the wheel, used from a folder far from this checkout, as a user would: it
carries the plugin (found by this environment's Hydra, whichever line), the launchers and the configs, and the
plugin loads no torch."""

import json
import shutil
import subprocess
from pathlib import Path

from omegaconf import OmegaConf

from helpers import EXAMPLES, install_wheel

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_plugin_and_its_configs_and_imports_no_torch(tmp_path):
    python = install_wheel(tmp_path)
    app = tmp_path / "app"
    (app / "conf").mkdir(parents=True)
    shutil.copy(EXAMPLES / "sphere.py", app)
    shutil.copy(EXAMPLES / "conf" / "sphere.yaml", app / "conf")

    def run(*args):
        return subprocess.run([python, *args], cwd=app, capture_output=True, text=True, timeout=600,
                              start_new_session=True)

    where = run("-c", """
import json, sys, importlib.metadata as m
import sweep, hydra_plugins.sweep_plugin
import sweep.sweeper.core, sweep.sweeper.scheduler, sweep.sweeper.report, sweep.sweeper.task, sweep.report
import sweep.launchers.pool, sweep.launchers.ray_pool, sweep.launchers.slurm_pool
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
d = m.distribution('sweep')
found = [c.__name__ for kind in (Sweeper, Launcher) for c in Plugins.instance().discover(kind)
         if c.__module__ == 'hydra_plugins.sweep_plugin']
print(json.dumps([sweep.__file__, sorted(str(f) for f in d.files if str(f).startswith('sweep/conf/')),
                  sorted(set(found)), 'torch' in sys.modules]))
""")
    assert where.returncode == 0, where.stderr
    module, conf_files, plugins, torch_loaded = json.loads(where.stdout)
    assert module.startswith(str(tmp_path / "venv")) and not module.startswith(str(ROOT))
    assert "sweep/conf/config.yaml" in conf_files and "sweep/conf/search/digits.yaml" in conf_files
    assert plugins == ["OptunaSweeper", "PoolLauncher", "RayPoolLauncher", "SlurmPoolLauncher"]
    assert torch_loaded is False

    sphere = run("sphere.py", "--multirun", "hydra.sweeper.n_trials=10", "hydra/launcher=pool",
                 "hydra.sweeper.storage=sqlite:///sphere.db", f"hydra.sweep.dir={tmp_path / 'out'}")
    assert sphere.returncode == 0, sphere.stderr
    assert OmegaConf.load(tmp_path / "out" / "optimization_results.yaml").best_value <= 25
    assert (tmp_path / "out" / "report.html").exists()
