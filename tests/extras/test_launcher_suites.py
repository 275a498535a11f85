"""Hydra's own launcher suites against ray_pool (a local Ray) and slurm_pool (submitit's local executor), as Hydra's
ray and submitit plugins run them. One behaviour of each suite runs by default; the rest are `slow`
(tests/conftest.py marks them). The pool runs all three suites by default (tests/plugin/test_hydra_suites.py)."""

from __future__ import annotations

import sys

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite

from helpers import run

pytest.importorskip("ray")
pytest.importorskip("submitit")
pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time on a 2-core machine

Plugins.instance().discover(Sweeper)


@pytest.fixture(autouse=True)
def release_workers():
    """The suites run Hydra in this process: the workers a launcher keeps between batches go with each test."""
    yield
    from sweep.launchers.protocol import release_kept

    release_kept()  # before the suites snapshot Hydra's singletons (see test_hydra_suites.py)

RAY = ["hydra.launcher.num_cpus_per_trial=0.5"]
SLURM = ["hydra.launcher.executor=local", "hydra.launcher.timeout_min=5"]


@pytest.mark.parametrize("launcher_name, overrides", [("ray_pool", RAY), ("slurm_pool", SLURM)])
class TestLaunchers(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("ray_pool", RAY), ("slurm_pool", SLURM)])
class TestLaunchersBatched(BatchedSweeperTestSuite):
    def test_sweep_2_jobs_2_batches(self, hydra_sweep_runner, launcher_name, overrides, tmpdir):
        super().test_sweep_2_jobs_2_batches(hydra_sweep_runner, launcher_name,
                                            [*overrides, "hydra.sweeper.max_batch_size=2"], tmpdir)


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [
    ({}, ["-m", "hydra/launcher=ray_pool", *RAY, "hydra/hydra_logging=disabled", "hydra/job_logging=disabled"]),
    ({}, ["-m", "hydra/launcher=slurm_pool", *SLURM, "hydra/hydra_logging=disabled", "hydra/job_logging=disabled"]),
])
class TestLaunchersIntegration(IntegrationTestSuite):
    pass


APP = """
import hydra

@hydra.main(version_base=None, config_path=None)
def main(cfg):
    print("job", cfg.x)
    return cfg.x

if __name__ == "__main__":
    main()
"""


def test_slurm_pool_runs_batch_after_batch_of_hydras_basic_sweeper(tmp_path):
    # It hung after the second job: a shutdown between batches left the job watcher's stop flag set.
    (tmp_path / "app.py").write_text(APP)
    result = run([sys.executable, "app.py", "--multirun", "+x=1,2,3", "hydra/launcher=slurm_pool", *SLURM,
                  "hydra.sweeper.max_batch_size=1"], cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.read_text().split()[-1] for p in tmp_path.glob("multirun/*/*/*/console.log")) == ["1", "2", "3"]
