"""Every setting Hydra sees, in one typed place: the sweeper with its sampler and pruner groups, and the launchers,
each field with its default and the rule it is checked against (sweep/checks.py), registered in Hydra's ConfigStore.

Hydra imports this at start-up (through hydra_plugins/sweep_plugin), so it stays light: no Optuna, no Ray, no
torch. After `pip install`, any Hydra app picks the sweeper with one defaults line:

    defaults:
      - override hydra/sweeper: sweep        # hydra/sweeper/sampler=tpe|random|grid|..., hydra/sweeper/pruner=...
      - override hydra/launcher: pool        # optional: trials in worker processes, refilled as each one ends

The sampler configs have the fields and defaults of hydra-optuna-sweeper's, so `hydra/sweeper/sampler=...` and
`hydra.sweeper.sampler.seed=...` mean the same with either sweeper. Where a sweeper setting differs from
upstream's, its comment says so.

How many trials run at once has one owner: hydra.sweeper.n_jobs. The sweeper asks the launcher for that many (never
more than n_trials), and the launcher answers with its slots, fewer where its capacity is lower; null asks for the
launcher's whole capacity (sweep/launchers/protocol.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from sweep.checks import (Rule, listish, integer, mapping, number, one_of, optional, seconds, setting,
                          strings, text)

PLUGIN = "hydra_plugins.sweep_plugin"  # where Hydra 1.3 requires plugin classes to live
CONSOLE = one_of("file", "terminal")


@dataclass
class SweeperConf:
    """hydra-optuna-sweeper's settings, with the same meanings and defaults (differences noted), then ours."""

    _target_: str = f"{PLUGIN}.OptunaSweeper"
    _recursive_: bool = False  # the sweeper builds its sampler and pruner itself (Hydra 1.3 would do it first)
    defaults: list = field(default_factory=lambda: [{"sampler": "budget"}, {"pruner": "median"}])
    sampler: Any = MISSING
    direction: Any = "minimize"  # minimize | maximize, or a list of them for a multi-objective study
    storage: Any = None  # null: in memory (cannot resume); sqlite:///path.db, journal:///path.log, postgresql://...
    study_name: Any = setting(None, optional(text()))  # null: Optuna makes one up; same name + storage = same study
    n_trials: Any = setting(20, integer(low=1))  # trials this invocation adds (a resumed study gets this many more)
    # Trials in flight at once; the launcher may run fewer (its slots). Upstream's default is 2; here null asks for
    # the launcher's capacity: every GPU slot of the pool, what a Ray cluster fits, else 2.
    n_jobs: Any = setting(None, optional(integer(low=1), "the launcher's capacity"))
    # Stop once more than this share of n_trials has failed (0..1). Upstream counts it per batch of n_jobs trials.
    max_failure_rate: Any = setting(0.0, number(low=0, high=1))
    # The search space: key: choice(...) | range(...) | interval(...) | tag(log, ...). range(a, b) excludes b, as in
    # Hydra's own sweeps (upstream includes it).
    params: Optional[Dict[str, Any]] = setting(None, optional(mapping()))
    custom_search_space: Optional[str] = None  # a function (cfg, trial) that suggests more parameters
    # ---- sweep's own
    pruner: Any = MISSING  # hydra/sweeper/pruner=none|median|halving|hyperband
    metric_names: Optional[List[str]] = None  # names of the objectives, shown by the report and optuna-dashboard
    check: Optional[str] = None  # a function (cfg) run on configs at the edges of the space before any trial
    timeout: Any = setting(None, optional(seconds()))  # seconds after which no new trial starts; null: no limit
    time_budget: Any = setting(None, optional(seconds()))  # seconds for the whole sweep: then running trials stop
    retries: Any = setting(0, integer(low=0))  # reruns of a trial whose worker died (resuming from its checkpoint)
    heartbeat_interval: Any = setting(30, integer(low=1))  # seconds between liveness marks of running trials
    grace_period: Any = setting(120, integer(low=1))  # seconds without one after which a running trial is FAIL
    # The report (report.html, report.csv, plots) in the sweep directory at the end: true (its plots drawn by a process
    # of their own, so the command ends at once), wait (drawn before the command ends), false (none)
    report: Any = setting(True, Rule("true, false or wait", lambda v: isinstance(v, bool) or v == "wait"))
    enqueue: Any = field(default_factory=list)  # configurations to try first: [{key: value, ...}, ...]
    # Another study's completed trials, added to a new study before its first trial: {storage: URL, study_name: NAME}
    warm_start: Any = setting(None, optional(mapping()))
    # Stop the whole sweep early: {target: value reached, trials: N without improvement, seconds: T without one}.
    stop: Any = setting(None, optional(mapping()))
    # A noisy objective: once the search is done, the best `repeats` configurations run `repeats` times in all, each
    # run with another seed in the app's `seed_key`; the report ranks them by the mean. 1: no repeats.
    repeats: Any = setting(1, integer(low=1))
    seed_key: Any = setting("seed", text())  # the app's config key that seeds a run (sweep.train: trainer.seed)
    # A tracker's run for the whole sweep, made in the sweep's process before the first trial; each trial finds its id
    # as sweep.trial().parent_run_id. {_target_: sweep.tracking.MLflowParent, tracking_uri: ..., experiment_name: ...}
    tracker: Any = setting(None, optional(Rule("a {_target_: ..., ...} mapping", lambda v: hasattr(v, "keys") and isinstance(v.get("_target_"), str))))
    # Called in the sweep's process after each trial ends, as Optuna calls its callbacks: (study, frozen_trial).
    # [{_target_: optuna_integration.mlflow.MLflowCallback, tracking_uri: ..., metric_name: ...}, ...]
    callbacks: Any = setting(factory=list, rule=Rule("a list of {_target_: ..., ...} mappings", lambda v: listish(v) and all(
        hasattr(c, "keys") and isinstance(c.get("_target_"), str) for c in v)))


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
class BudgetSamplerConf(TPESamplerConf):
    """sweep's own: TPE (every field above) fitted on each trial's value at the largest epoch enough trials reached,
    pruned trials included, and aware of the running ones."""

    _target_: str = "sweep.sweeper.sampler.BudgetSampler"
    min_trials: int = 10  # trials that must have reached an epoch before the model is fitted at it
    # top: fit at the largest epoch min_trials reached (BOHB); across: every trial at its own last epoch, scored by
    # its quantile among the trials that reached that epoch; last: every trial with its best value by its last epoch
    rungs: str = "top"
    constant_liar: bool = True  # running trials count as bad ones, so parallel workers spread out
    # one model of all parameters together (Optuna 5's own default; the independent one fell behind both peers on
    # every synthetic -mixed curve: docs/search.md)
    multivariate: bool = True


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


# ---------------------------------------------------------------- pruners: YAML files in sweep/plugin_conf, found
# through the plugin's search path (an app's own presets of the same names override them without a warning)


# ---------------------------------------------------------------- launchers


GPU_IDS = Rule("null (every visible GPU), [] (CPU only) or a list of device ids such as [0,1]",
               lambda v: v is None or (listish(v) and all(isinstance(g, int) and not isinstance(g, bool) and g >= 0
                                                             for g in v)))


@dataclass
class PoolLauncherConf:
    _target_: str = f"{PLUGIN}.PoolLauncher"
    gpus: Any = setting(None, GPU_IDS)  # null: every visible CUDA GPU (none: CPU only); []: CPU only; [0, 1]: these
    trials_per_gpu: Any = setting(1, integer(low=1))  # trials that share one GPU at a time (small models: 2-4)
    threads_per_job: Any = setting(None, optional(integer(low=1), "cores / workers"))  # CPU threads per worker
    console: Any = setting("file", CONSOLE)  # file: what a trial prints goes to its run's console.log | terminal


@dataclass
class RayPoolLauncherConf:
    _target_: str = f"{PLUGIN}.RayPoolLauncher"
    address: Any = setting(None, optional(text(), "start a local Ray"))  # auto or host:port: join a running cluster
    num_cpus_per_trial: Any = setting(1, number(low=0))  # Ray resources each trial reserves; fractions share one
    num_gpus_per_trial: Any = setting(0, number(low=0))
    connect_timeout: Any = setting(60, seconds())  # joining a cluster: seconds to wait for its answer
    console: Any = setting("file", CONSOLE)  # file: what a trial prints goes to its run's console.log | terminal


COUNT, WORDS = optional(integer(low=1)), optional(text())


@dataclass
class SlurmPoolLauncherConf:
    """One submitit job per trial; the settings mirror hydra-submitit-launcher's."""

    _target_: str = f"{PLUGIN}.SlurmPoolLauncher"
    executor: Any = setting("slurm", one_of("slurm", "local"))  # local: submitit's local executor (laptops, tests)
    submitit_folder: Any = setting("${hydra.sweep.dir}/.submitit/%j", text())
    timeout_min: Any = setting(60, number(above=0))
    cpus_per_task: Any = setting(None, COUNT)
    gpus_per_node: Any = setting(None, COUNT)
    tasks_per_node: Any = setting(1, integer(low=1))
    mem_gb: Any = setting(None, optional(number(above=0)))
    nodes: Any = setting(1, integer(low=1))
    name: Any = setting("${hydra.job.name}", text())
    partition: Any = setting(None, WORDS)
    qos: Any = setting(None, WORDS)
    comment: Any = setting(None, WORDS)
    constraint: Any = setting(None, WORDS)
    exclude: Any = setting(None, WORDS)
    gres: Any = setting(None, WORDS)
    cpus_per_gpu: Any = setting(None, COUNT)
    gpus_per_task: Any = setting(None, COUNT)
    mem_per_gpu: Any = setting(None, WORDS)
    mem_per_cpu: Any = setting(None, WORDS)
    account: Any = setting(None, WORDS)
    signal_delay_s: Any = setting(120, integer(low=0))
    setup: Any = setting(None, optional(strings()))  # shell lines run before the job (module load ..., source ...)
    srun_args: Any = setting(None, optional(strings()))
    additional_parameters: Any = setting(factory=dict, rule=mapping())


def register() -> None:
    """Put the configs in Hydra's ConfigStore, leaving entries that are there already: Hydra may load this module
    more than once, and hydra-optuna-sweeper, when installed, registers the same sampler group (same fields)."""
    import importlib
    import importlib.util

    # hydra-optuna-sweeper registers the same sampler group names without looking, and warns where they exist: when
    # it is installed, its configs (the same fields) go in first, and ours fill only what it lacks.
    try:
        if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
            importlib.import_module("hydra_plugins.hydra_optuna_sweeper.config")
    except Exception:  # a broken install of it is not this plugin's failure
        pass
    store = ConfigStore.instance()
    entries = [("hydra/sweeper", "sweep", SweeperConf)]
    entries += [("hydra/sweeper/sampler", name, node) for name, node in [
        ("tpe", TPESamplerConf), ("budget", BudgetSamplerConf), ("random", RandomSamplerConf),
        ("grid", GridSamplerConf), ("cmaes", CmaEsSamplerConf),
        ("nsgaii", NSGAIISamplerConf), ("nsgaiii", NSGAIIISamplerConf), ("gp", GPSamplerConf), ("qmc", QMCSamplerConf)]]
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


SAMPLER_TARGETS = ("optuna.samplers.", "sweep.sweeper.sampler.",
                   "hydra_plugins.hydra_optuna_sweeper.")  # the latter: its configs, if they won
PRUNER_TARGETS = ("optuna.pruners.", "sweep.sweeper.asha.")


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


def made(node: Any, setting: str) -> Any:
    """The object a {_target_: ..., field: value} setting names (a callback, a tracker, a logger): the user's own
    code, called with the fields as they resolve. One that cannot be made is one line naming the setting."""
    from hydra.utils import get_method
    from omegaconf import OmegaConf

    from sweep.errors import UserError, first_line
    from sweep.redact import redact

    fields = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
    target = fields.pop("_target_", None)
    try:
        return get_method(target)(**fields)
    except UserError:
        raise
    except Exception as e:  # a target that does not import, or arguments it does not take
        raise UserError(f"{setting}._target_={target} cannot be created: {redact(first_line(e))}") from None
