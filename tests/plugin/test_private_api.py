"""The private parts of other projects that sweep still relies on, each used in one place. These fail when an upgrade
changes them, instead of a sweep failing later."""

import math
import multiprocessing
import os
import subprocess

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus


def test_a_failed_jobs_exception_is_still_where_sweep_launcher_reads_it():
    from sweep.launchers.job import job_error

    error = RuntimeError("boom")
    assert job_error(JobReturn(status=JobStatus.FAILED, _return_value=error)) is error
    assert job_error(JobReturn(status=JobStatus.COMPLETED, _return_value=1.0)) is None


def test_multiprocessing_can_still_stop_its_fork_server_and_resource_tracker():
    from multiprocessing import forkserver, resource_tracker

    from sweep.launchers.pool import _stop_fork_server

    ctx = multiprocessing.get_context("forkserver")
    proc = ctx.Process(target=os.getpid)
    proc.start()
    proc.join()
    helpers = [int(p) for p in subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True,
                                              text=True).stdout.split()]
    assert helpers  # the fork server and the resource tracker, children of this process
    assert isinstance(forkserver._forkserver._forkserver_pid, int)  # what a stop mid-start-up kills
    assert callable(forkserver._forkserver._stop) and callable(resource_tracker._resource_tracker._stop)
    _stop_fork_server()
    assert not [p for p in helpers if _state(p) not in ("gone", "Z")]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_optunas_journal_lock_is_still_a_symlink_named_after_the_journal(tmp_path):
    # sweep.sweeper.storage.journal_lock gives Optuna < 4.3 a stale-lock rule on this same file, so both can share a journal.
    from optuna.storages.journal import JournalFileSymlinkLock

    journal = tmp_path / "study.log"
    lock = JournalFileSymlinkLock(str(journal))
    lock.acquire()
    assert os.readlink(f"{journal}.lock") == str(journal)
    lock.release()
    assert not os.path.lexists(f"{journal}.lock")


def test_a_report_written_into_optunas_sqlite_tables_reads_back_through_optuna(tmp_path, monkeypatch):
    # sweep.sweeper.storage.report_writer INSERTs a running trial's reports into Optuna's private tables.
    from sweep.sweeper import storage as st

    spec = st.parse(f"sqlite:///{tmp_path}/study.db")
    backend = st.open_storage(spec)
    study = optuna.create_study(storage=backend, study_name="s")
    running, finished = study.ask(), study.ask()
    study.tell(finished, 1.0)
    write = st.report_writer(backend)
    public = backend.set_trial_intermediate_value
    monkeypatch.setattr(backend, "set_trial_intermediate_value", _refuse)  # a new step must not need Optuna's call
    values = {0: 0.25, 1: math.inf, 2: -math.inf, 3: math.nan, 4: -1e300}
    for step, value in values.items():
        write(running._trial_id, step, value)
    read = optuna.load_study(study_name="s", storage=backend).trials[0].intermediate_values
    assert read.keys() == values.keys()
    assert all(read[s] == v or (math.isnan(read[s]) and math.isnan(v)) for s, v in values.items())
    # What the INSERT leaves alone goes to Optuna's call, which answers as Optuna does.
    monkeypatch.setattr(backend, "set_trial_intermediate_value", public)
    write(running._trial_id, 0, 0.5)
    assert optuna.load_study(study_name="s", storage=backend).trials[0].intermediate_values[0] == 0.5
    with pytest.raises(RuntimeError, match="finished"):  # UpdateFinishedTrialError from Optuna 4.4 on
        write(finished._trial_id, 0, 0.5)


def _refuse(*args):
    raise AssertionError("the report went through Optuna's call")


def test_a_jobs_config_set_on_a_composed_copy_is_hydras_own_composition(tmp_path):
    # sweep.launchers.job.job_config_of composes once and sets each job's values as Hydra does after composing, with
    # Hydra 1.3's private function for hydra.job.override_dirname: every config here must equal Hydra's own.
    from types import SimpleNamespace

    import hydra
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from sweep.launchers.job import Payload, job_config_of

    (tmp_path / "model").mkdir()
    (tmp_path / "app.yaml").write_text("defaults:\n  - model: small\n  - _self_\nlr: 0.1\nname: run\nlayers: [1, 2]\n"
                                       "opt: {momentum: 0.9, nesterov: false}\nderived: ${lr}\n")
    (tmp_path / "model" / "small.yaml").write_text("width: 8\n")
    (tmp_path / "model" / "big.yaml").write_text("width: 64\ndepth: 3\n")
    env = ["+hydra.job.env_set.SWEEP_TRIAL='3'", "+hydra.job.env_set.SWEEP_STUDY='s'"]
    jobs = [["lr=0.5", "name=abc", *env, "+hydra.job.env_set.WHERE=at_${hydra.job.num}", "derived=at_${hydra:job.num}"],
            ["lr=0.25", "name=x y", *env], ["layers=[4,5,6]", "opt={momentum: 0.5}"], ["opt={nesterov: true}"],
            ["opt.nesterov=true", "derived=${name}", "lr=null"], ["model=big", "lr=1e-3"],
            ["model.width=16", "model=big", *env], ["model=small", "model.width=2"], ["+extra=1"], ["lr=2", "lr=3"]]
    version = {"version_base": None} if hydra.__version__ < "1.4" else {}  # 1.3 needs it, 1.4 warns about it
    with initialize_config_dir(config_dir=str(tmp_path), **version):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration(config_name="app", overrides=[f"hydra.sweep.dir={tmp_path / 'out'}",
                                                                      "hydra.sweep.subdir=at_${hydra.job.num}"],
                                           run_mode=RunMode.MULTIRUN)
        payload = Payload(SimpleNamespace(config_loader=loader), master, None, None)
        composed = []
        own = loader.load_sweep_config
        loader.load_sweep_config = lambda config, overrides: composed.append(overrides) or own(config, overrides)
        for overrides in jobs:
            ours, hydras = job_config_of(payload, list(overrides)), own(master, list(overrides))
            assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(hydras), overrides
            assert OmegaConf.to_container(ours.hydra.overrides) == OmegaConf.to_container(hydras.hydra.overrides)
            assert OmegaConf.is_struct(ours) and not OmegaConf.is_readonly(ours.hydra)
        for wrong in (["nope=1"], ["lr={a: 1}", "model=huge"], ["+lr=1"]):  # Hydra's own error, in Hydra's words
            with pytest.raises(Exception) as hydras:
                own(master, wrong)
            with pytest.raises(type(hydras.value), match=str(hydras.value).splitlines()[0]):
                job_config_of(payload, wrong)
        # composed once per choice of the model group, and left as composed; Hydra's own call for the rest
        assert composed == [[], ["model=big"], ["model=small"], ["+extra=1"], ["nope=1"], ["model=huge"], ["+lr=1"]]
        assert OmegaConf.to_yaml(payload.composed[()]) == OmegaConf.to_yaml(own(master, []))
