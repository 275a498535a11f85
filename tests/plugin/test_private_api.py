"""The private parts of other projects that sweep relies on, each used in one place. These fail when an upgrade
changes them, instead of a sweep failing later."""

import inspect

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import CategoricalDistribution, IntDistribution


def test_hydra_optuna_sweepers_implementation_still_offers_what_sweep_sweeper_uses():
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides

    space, fixed, deletions = create_params_from_overrides(["a=choice(1,2)", "b=3", "~c"])
    assert space == {"a": CategoricalDistribution([1, 2])} and fixed == {"b": "3"} and deletions == ["~c"]
    impl = OptunaSweeperImpl(None, "maximize", None, "s", 1, 1, 0.0, None, None)
    impl._process_searchspace_config()
    assert impl._parse_sweeper_params_config() == [] and impl._get_directions() == ["maximize"]
    assert OptunaSweeperImpl._to_grid_sampler_choices(IntDistribution(1, 3)) == [1, 2, 3]
    study = optuna.create_study()
    overrides = impl._configure_trials([study.ask()], {"a": CategoricalDistribution([1, 2])}, {"b": "3"}, [])
    assert overrides[0][0] in ("a=1", "a=2") and overrides[0][1] == "b=3"
    assert list(inspect.signature(OptunaSweeperImpl.setup).parameters) == ["self", "hydra_context", "task_function",
                                                                           "config"]


def test_optuna_still_lists_stale_trials_the_way_sweep_storage_reads_them():
    from sweep.storage import stale_trial_ids

    storage = optuna.storages.RDBStorage("sqlite:///:memory:", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    assert stale_trial_ids(storage, study._study_id) == []


def test_a_failed_jobs_exception_is_still_where_sweep_launcher_reads_it():
    from sweep.launcher import job_error

    error = RuntimeError("boom")
    assert job_error(JobReturn(status=JobStatus.FAILED, _return_value=error)) is error
    assert job_error(JobReturn(status=JobStatus.COMPLETED, _return_value=1.0)) is None
