"""The configs Hydra sees: the sweeper with its sampler and pruner groups, and the launchers, in Hydra's ConfigStore.

Hydra imports this at start-up (through hydra_plugins/sweep_plugin), so it stays light: no Optuna, no Ray, no
torch. After `pip install`, any Hydra app picks the sweeper with one defaults line:

    defaults:
      - override hydra/sweeper: sweep        # hydra/sweeper/sampler=tpe|random|grid|..., hydra/sweeper/pruner=...
      - override hydra/launcher: pool        # optional: trials in worker processes, refilled as each one ends

The sampler configs have the fields and defaults of hydra-optuna-sweeper's, so `hydra/sweeper/sampler=...` and
`hydra.sweeper.sampler.seed=...` mean the same with either sweeper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

PLUGIN = "hydra_plugins.sweep_plugin"  # where Hydra 1.3 requires plugin classes to live


@dataclass
class SweeperConf:
    """hydra-optuna-sweeper's settings, with the same meanings and defaults, then ours."""

    _target_: str = f"{PLUGIN}.OptunaSweeper"
    _recursive_: bool = False  # the sweeper builds its sampler and pruner itself (Hydra 1.3 would do it first)
    defaults: list = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING
    direction: Any = "minimize"  # minimize | maximize, or a list of them for a multi-objective study
    storage: Any = None  # null: in memory (cannot resume); sqlite:///path.db, journal:///path.log, postgresql://...
    study_name: Optional[str] = None  # null: Optuna makes one up; same name + same storage = the same study
    n_trials: Any = 20  # trials this invocation adds (a resumed study gets this many more)
    n_jobs: Any = 2  # trials in flight at once (a launcher with fixed slots, such as the pool on GPUs, sets its own)
    max_failure_rate: Any = 0.0  # stop once more than this share of n_trials has failed (0..1)
    params: Optional[Dict[str, Any]] = None  # the search space: key: choice(...) | range(...) | interval(...) | tag(log, ...)
    custom_search_space: Optional[str] = None  # a function (cfg, trial) that suggests more parameters
    # ---- sweep's own
    pruner: Any = MISSING  # hydra/sweeper/pruner=none|median|halving|hyperband
    metric_names: Optional[List[str]] = None  # names of the objectives, shown by the report and optuna-dashboard
    check: Optional[str] = None  # a function (cfg) run on configs at the edges of the space before any trial
    timeout: Any = None  # seconds after which no new trial starts (running ones finish); null: no limit
    time_budget: Any = None  # seconds for the whole sweep: then running trials stop at their next report
    retries: Any = 0  # times a trial whose worker died is run again (resuming from its checkpoint, if it has one)
    heartbeat_interval: Any = 30  # seconds between liveness marks of running trials (database storage)
    grace_period: Any = 120  # seconds without one after which another sweep marks a running trial FAIL
    report: Any = True  # write report.html, report.csv and plots into the sweep directory at the end
    enqueue: Any = field(default_factory=list)  # configurations to try first: [{key: value, ...}, ...]


# ---------------------------------------------------------------- samplers: hydra-optuna-sweeper's fields


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    consider_prior: Optional[bool] = None  # null: Optuna's default (fields left null are not passed)
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: bool = False
    warn_independent_sampling: Optional[bool] = None
    constant_liar: bool = False
    constraints_func: Any = None


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class GridSamplerConf:
    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True  # the grid comes from the search space
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
    x0: Optional[Dict[str, Any]] = None
    sigma0: Optional[float] = None
    n_startup_trials: int = 1
    independent_sampler: Any = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Any = None
    popsize: Optional[int] = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False
    source_trials: Any = None


@dataclass
class NSGAIISamplerConf:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: Optional[int] = None
    population_size: int = 50
    mutation_prob: Optional[float] = None
    crossover: Any = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Any = None


@dataclass
class NSGAIIISamplerConf(NSGAIISamplerConf):
    _target_: str = "optuna.samplers.NSGAIIISampler"
    reference_points: Optional[List[List[float]]] = None
    dividing_parameter: int = 3


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    independent_sampler: Any = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Any = None
    warn_independent_sampling: bool = True


@dataclass
class QMCSamplerConf:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: Optional[int] = None
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Any = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


# ---------------------------------------------------------------- pruners


@dataclass
class NoPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"  # every trial runs to its end


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"  # stop a trial below the median of earlier ones at its step
    n_startup_trials: Any = 5  # trials that finish before any is pruned
    n_warmup_steps: Any = 0  # steps every trial reports before it can be pruned
    interval_steps: Any = 1
    n_min_trials: Any = 1


@dataclass
class HalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"  # asynchronous successive halving (ASHA)
    min_resource: Any = "auto"  # steps before the first rung; auto: from the first finished trial
    reduction_factor: Any = 4  # keep the top 1/reduction_factor at each rung
    min_early_stopping_rate: Any = 0
    bootstrap_count: Any = 0


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"  # several halving brackets of different aggressiveness
    min_resource: Any = 1  # steps before the first rung of the most aggressive bracket
    max_resource: Any = "auto"  # a trial's full length in steps; auto: the first finished trial's
    reduction_factor: Any = 3
    bootstrap_count: Any = 0


# ---------------------------------------------------------------- launchers


@dataclass
class PoolLauncherConf:
    _target_: str = f"{PLUGIN}.PoolLauncher"
    n_jobs: Any = None  # worker processes; null: hydra.sweeper.n_jobs on CPUs, len(gpus) x trials_per_gpu on GPUs
    gpus: Any = None  # null: every visible CUDA GPU (none: CPU only); [] : CPU only; [0, 1]: these device ids
    trials_per_gpu: Any = 1  # trials that share one GPU at a time (small models: 2-4)
    threads_per_job: Any = None  # CPU threads per worker (torch, OpenMP, BLAS); null: cores / workers
    console: Optional[str] = "file"  # file: what a trial prints goes to its run's console.log | terminal


@dataclass
class RayPoolLauncherConf:
    _target_: str = f"{PLUGIN}.RayPoolLauncher"
    address: Optional[str] = None  # null: start a local Ray; auto or host:port: join a running cluster
    n_jobs: Any = None  # trials in flight; null: as many as the cluster's CPUs and GPUs fit at start
    num_cpus_per_trial: Any = 1  # Ray resources each trial reserves; fractions share a CPU or GPU
    num_gpus_per_trial: Any = 0
    console: Optional[str] = "file"  # file: what a trial prints goes to its run's console.log | terminal


@dataclass
class SlurmPoolLauncherConf:
    """One submitit job per trial; the settings mirror hydra-submitit-launcher's."""

    _target_: str = f"{PLUGIN}.SlurmPoolLauncher"
    executor: str = "slurm"  # slurm | local (submitit's local executor: laptops and tests)
    n_jobs: Any = None  # jobs in flight; null: hydra.sweeper.n_jobs
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
    timeout_min: Any = 60
    cpus_per_task: Optional[int] = None
    gpus_per_node: Optional[int] = None
    tasks_per_node: int = 1
    mem_gb: Optional[int] = None
    nodes: int = 1
    name: str = "${hydra.job.name}"
    partition: Optional[str] = None
    qos: Optional[str] = None
    comment: Optional[str] = None
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    gres: Optional[str] = None
    cpus_per_gpu: Optional[int] = None
    gpus_per_task: Optional[int] = None
    mem_per_gpu: Optional[str] = None
    mem_per_cpu: Optional[str] = None
    account: Optional[str] = None
    signal_delay_s: int = 120
    setup: Optional[List[str]] = None  # shell lines run before the job (module load ..., source venv ...)
    srun_args: Optional[List[str]] = None
    additional_parameters: Dict[str, Any] = field(default_factory=dict)


def register() -> None:
    """Put the configs in Hydra's ConfigStore, leaving entries that are there already: Hydra may load this module
    more than once, and hydra-optuna-sweeper, when installed, registers the same sampler group (same fields)."""
    store = ConfigStore.instance()
    entries = [("hydra/sweeper", "sweep", SweeperConf)]
    entries += [("hydra/sweeper/sampler", name, node) for name, node in [
        ("tpe", TPESamplerConf), ("random", RandomSamplerConf), ("grid", GridSamplerConf), ("cmaes", CmaEsSamplerConf),
        ("nsgaii", NSGAIISamplerConf), ("nsgaiii", NSGAIIISamplerConf), ("gp", GPSamplerConf), ("qmc", QMCSamplerConf)]]
    entries += [("hydra/sweeper/pruner", name, node) for name, node in [
        ("none", NoPrunerConf), ("median", MedianPrunerConf), ("halving", HalvingPrunerConf),
        ("hyperband", HyperbandPrunerConf)]]
    entries += [("hydra/launcher", name, node) for name, node in [
        ("pool", PoolLauncherConf), ("ray_pool", RayPoolLauncherConf), ("slurm_pool", SlurmPoolLauncherConf)]]
    present: dict[str, set[str]] = {}
    for group, name, node in entries:
        if group not in present:
            try:
                present[group] = {entry.rsplit(".", 1)[0] for entry in store.list(group)}
            except Exception:  # no such group yet
                present[group] = set()
        if name not in present[group]:
            store.store(group=group, name=name, node=node, provider="sweep")


# ---------------------------------------------------------------- building what a config names


SAMPLER_TARGETS = ("optuna.samplers.", "hydra_plugins.hydra_optuna_sweeper.")  # the latter: its configs, if they won
PRUNER_TARGETS = ("optuna.pruners.",)


def build(node: Any, allowed: tuple[str, ...], setting: str, **extra: Any) -> Any:
    """The object a sampler or pruner config names: its `_target_` (only under `allowed`) called with its fields.
    Fields left null are not passed, so each library version applies its own default."""
    import functools

    from hydra.utils import get_method
    from omegaconf import OmegaConf

    from sweep.errors import UserError, first_line

    fields = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
    target = fields.pop("_target_", None)
    partial = fields.pop("_partial_", False)
    if not isinstance(target, str) or not target.startswith(allowed):
        raise UserError(f"{setting}._target_={target!r} is not allowed: expected a class under "
                        f"{' or '.join(a.rstrip('.') for a in allowed)}")
    kwargs = {k: v for k, v in {**fields, **extra}.items() if v is not None}
    if "reference_points" in kwargs:  # NSGA-III takes an array
        import numpy as np

        kwargs["reference_points"] = np.asarray(kwargs["reference_points"], dtype=float)
    try:
        factory = get_method(target)
        return functools.partial(factory, **kwargs) if partial else factory(**kwargs)
    except Exception as e:
        hint = "; pip install cmaes" if "cmaes" in str(e).lower() else ""
        raise UserError(f"{setting} ({target}) cannot be created: {first_line(e)}{hint}") from None
