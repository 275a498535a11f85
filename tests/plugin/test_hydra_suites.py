"""Hydra's own launcher test suites, run against the pool launcher (as Hydra's joblib and submitit plugins run them);
tests/extras runs them against ray_pool and slurm_pool."""

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite

# Hydra's plugins register their configs (hydra/sweeper/basic among them) when first scanned. The suites restore
# Hydra's singletons to what they were before each test, so the scan must come first, whatever test runs first.
Plugins.instance().discover(Sweeper)


@pytest.fixture(autouse=True)
def release_workers():
    """The suites run Hydra in this process: the workers a launcher keeps between batches go with each test."""
    yield
    from sweep.launchers.protocol import release_kept

    release_kept()


def test_hydra_discovers_the_sweeper_and_every_launcher():
    sweepers = [c for c in Plugins.instance().discover(Sweeper) if c.__module__ == "hydra_plugins.sweep_plugin"]
    launchers = [c for c in Plugins.instance().discover(Launcher) if c.__module__ == "hydra_plugins.sweep_plugin"]
    assert [c.__name__ for c in sweepers] == ["OptunaSweeper"]
    assert sorted(c.__name__ for c in launchers) == ["PoolLauncher", "RayPoolLauncher", "SlurmPoolLauncher"]


@pytest.mark.parametrize("launcher_name, overrides", [("pool", [])])
class TestPoolLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("pool", ["hydra.sweeper.max_batch_size=2"])])
class TestPoolLauncherBatched(BatchedSweeperTestSuite):
    pass


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [
    ({}, ["-m", "hydra/launcher=pool", "hydra/hydra_logging=disabled", "hydra/job_logging=disabled"]),
])
class TestPoolLauncherIntegration(IntegrationTestSuite):
    pass
