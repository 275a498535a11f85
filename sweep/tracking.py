"""Trackers: a run per trial in MLflow, TensorBoard, W&B or a CSV file, grouped per sweep.

The app's side (sweep.train's `logger` group uses it; any app can):

    with tracking.Runs(cfg.get("logger"), params, sweep.trial(), out_dir) as runs:
        for epoch in ...:
            runs.log({"val_accuracy": acc, ...}, step=epoch)
        runs.state = "pruned"        # else "completed"; an exception ends the runs as "failed"
        runs.artifact(out_dir / "best.pt")

The sweep's side: `hydra.sweeper.tracker: {_target_: sweep.tracking.MLflowParent, ...}` makes one parent run per
study in the sweep's process (a resumed study adds to the same one) and publishes its id, which every trial reads
as `sweep.trial().parent_run_id`. Children link to it by id (MLflow's `mlflow.parentRunId` tag), not through
`nested=True`, which loses the parent across processes. W&B groups by study name; TensorBoard by folder.

Every logger is closed in a `finally`: a pool worker runs many trials, and no run may leak into the next.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from sweep.errors import UserError, first_line
from sweep.redact import literal_password, redact

log = logging.getLogger(__name__)

PARENT_RUN = "parent_run_id"  # study user attributes the tracker publishes for its trials
TRACKING_URI = "tracking_uri"
EXPERIMENT = "experiment_name"


def _need(module: str, extra: str, setting: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{setting} needs {module.split('.')[0]}, which is not installed: "
                        f"pip install 'sweep[{extra}]'") from None


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys; lists become their text, so every tracker can show and compare them."""
    out: dict[str, Any] = {}
    for key, value in (config or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return out


class Logger:
    """One tracker's run for one trial: start, log per step, an artifact or two, finish with the trial's state."""

    setting = "logger"

    def start(self, params: dict, trial: Any, run_dir: Path) -> None: ...

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def artifact(self, path: Path) -> None: ...

    def finish(self, state: str) -> None: ...


class Runs:
    """The app's loggers (a mapping name -> {_target_: ...} config), started together, each finished once."""

    def __init__(self, loggers: Any, params: dict, trial: Any, run_dir: Path):
        from omegaconf import OmegaConf

        from sweep import settings

        self.loggers: list[Logger] = []
        self.state = "completed"
        self._args = (params, trial, run_dir)
        for name, spec in (loggers or {}).items():
            if spec is None:
                continue
            raw = OmegaConf.to_container(spec, resolve=False) if OmegaConf.is_config(spec) else dict(spec)
            uri = raw.get("tracking_uri")
            if isinstance(uri, str) and literal_password(uri):
                raise UserError(f"logger.{name}.tracking_uri holds a password, which would be saved in every run's "
                                "config; make the whole password ${oc.env:VAR}, or use MLflow's "
                                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
            made = settings.made(spec, f"logger.{name}")
            made.setting = f"logger.{name}"
            self.loggers.append(made)

    def __enter__(self) -> "Runs":
        params, trial, run_dir = self._args
        started: list[Logger] = []
        try:
            for logger in self.loggers:
                logger.start(params, trial, run_dir)
                started.append(logger)
        except BaseException:
            for logger in started:
                _quietly(logger.finish, "failed")
            raise
        return self

    def log(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def artifact(self, path: Path) -> None:
        if Path(path).is_file():
            for logger in self.loggers:
                logger.artifact(Path(path))

    def __exit__(self, kind, error, tb) -> bool:
        state = self.state if kind is None else "failed"
        for logger in self.loggers:
            _quietly(logger.finish, state)
        return False


def _quietly(call, *args) -> None:
    """Finishing a run must not hide the trial's own result or error: a tracker's failure there is a warning."""
    try:
        call(*args)
    except Exception as e:
        log.warning("a tracker could not close its run: %s", redact(first_line(e)))


def _trial_name(trial: Any) -> str | None:
    return None if getattr(trial, "number", None) is None else f"trial-{trial.number}"


def _sweep_dir() -> Path | None:
    """The sweep's folder in a sweep, None in a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir).resolve() if hc.mode == RunMode.MULTIRUN else None


# ------------------------------------------------------------------ CSV


class CSVLogger(Logger):
    """Every trial's metrics in one long-format CSV (trial, step, metric, value): the sweep's folder/metrics.csv, or
    the run's in a single run. Workers append one whole line per write, so their lines never interleave."""

    def __init__(self, path: str | None = None):
        self.path = Path(path) if path else None

    def start(self, params, trial, run_dir):
        self.path = self.path or (_sweep_dir() or run_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.trial = "" if getattr(trial, "number", None) is None else trial.number
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write([("trial", "step", "metric", "value")])

    def _write(self, rows) -> None:
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.getvalue().encode())
        finally:
            os.close(fd)

    def log(self, metrics, step):
        self._write([(self.trial, step, k, v) for k, v in metrics.items()])

    def finish(self, state):
        self._write([(self.trial, "", "state", state)])


# ------------------------------------------------------------------ TensorBoard


class TensorBoardLogger(Logger):
    """A folder per trial under the sweep's folder/tensorboard (the run's folder in a single run), with the HParams
    plugin's session records, so TensorBoard's HParams tab compares the trials."""

    def __init__(self, save_dir: str | None = None, metric: str = "val_accuracy"):
        self.save_dir, self.metric = save_dir, metric

    def start(self, params, trial, run_dir):
        tb = _need("torch.utils.tensorboard", "tensorboard", self.setting)
        from torch.utils.tensorboard.summary import hparams

        root = Path(self.save_dir) if self.save_dir else (_sweep_dir() or run_dir) / "tensorboard"
        self.dir = root / (_trial_name(trial) or "run")
        self.writer = tb.SummaryWriter(log_dir=str(self.dir))
        experiment, start, _ = hparams({k: v for k, v in flatten(params).items() if v is not None}, {self.metric: 0.0})
        for summary in (experiment, start):
            self.writer.file_writer.add_summary(summary)

    def log(self, metrics, step):
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, state):
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        # The session's end, as torch's hparams() writes it, but with the trial's own status (TensorFlow-free).
        status = api_pb2.STATUS_SUCCESS if state in ("completed", "pruned", "paused") else api_pb2.STATUS_FAILURE
        content = plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(status=status),
                                                    version=metadata.PLUGIN_DATA_VERSION)
        plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
        self.writer.add_text("state", state)
        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(
            tag=metadata.SESSION_END_INFO_TAG, metadata=SummaryMetadata(plugin_data=plugin))]))
        self.writer.close()


# ------------------------------------------------------------------ MLflow


def _reachable(uri: str, setting: str) -> None:
    """An http(s) tracking server answers its health check within seconds, or the run stops with one line (MLflow's
    own client would retry for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
    except urllib.error.HTTPError:
        return  # it answered: a server without /health, or behind a proxy that wants a login
    except Exception as e:
        raise UserError(f"{setting}: the MLflow tracking server {redact(uri)} cannot be reached "
                        f"({redact(first_line(e))}); start it, or point its tracking_uri (or MLFLOW_TRACKING_URI) "
                        "elsewhere") from None


def _mlflow_client(tracking_uri: str | None, setting: str):
    _need("mlflow", "mlflow", setting)
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        _reachable(uri, setting)
    try:
        return MlflowClient(uri) if uri else MlflowClient()
    except Exception as e:
        raise UserError(f"{setting}: MLflow cannot use the tracking URI {redact(str(uri))}: "
                        f"{redact(first_line(e))}") from None


def _experiment_id(client, name: str, setting: str) -> str:
    """The experiment's id, made if it is new; two workers making it at once both end with the same one."""
    try:
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                return client.create_experiment(name)
            except Exception:  # another worker made it a moment ago
                found = client.get_experiment_by_name(name)
        return found.experiment_id
    except Exception as e:
        raise UserError(f"{setting}: MLflow experiment {name!r}: {redact(first_line(e))}") from None


class MLflowParent:
    """hydra.sweeper.tracker: one MLflow parent run per study, in the sweep's process. Its id goes to the study's
    user attributes, where each trial finds it (sweep.trial().parent_run_id); the parent logs the best value after
    each trial and ends with the sweep."""

    def __init__(self, tracking_uri: str | None = None, experiment_name: str | None = None):
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self.setting = "hydra.sweeper.tracker"

    def start(self, study) -> None:
        self.client = _mlflow_client(self.tracking_uri, self.setting)
        name = self.experiment_name or study.study_name
        experiment = _experiment_id(self.client, name, self.setting)
        run_id = study.user_attrs.get(PARENT_RUN)
        try:
            if run_id and self.client.get_run(run_id).info.experiment_id == experiment:
                self.client.update_run(run_id, status="RUNNING")  # a resumed study: the same parent
            else:
                run_id = None
        except Exception:  # deleted, or another server: a new parent
            run_id = None
        if run_id is None:
            run_id = self.client.create_run(experiment, run_name=study.study_name,
                                            tags={"sweep.study": study.study_name}).info.run_id
        self.run_id = run_id
        study.set_user_attr(PARENT_RUN, run_id)
        study.set_user_attr(EXPERIMENT, name)
        uri = self.client.tracking_uri
        if "@" not in uri.split("://", 1)[-1].split("/", 1)[0]:  # never a URI with credentials in it
            study.set_user_attr(TRACKING_URI, uri)  # workers elsewhere (Ray, SLURM) may lack the environment

    def __call__(self, study, trial) -> None:
        if trial.values is None or len(study.directions) > 1:
            return
        try:
            best = study.best_value
        except ValueError:
            return
        self.client.log_metric(self.run_id, "best_value", best, step=trial.number)

    def end(self, study, interrupted: bool) -> None:
        self.client.set_terminated(self.run_id, "KILLED" if interrupted else "FINISHED")


class MLflowLogger(Logger):
    """A child run per trial, linked to the sweep's parent run by id: the config as parameters, each step's
    metrics (sent at most every FLUSH_SECONDS, so short epochs do not each wait on the server), the best checkpoint as an artifact, and the trial's state (a pruned trial ends KILLED, with the tag
    sweep.state=pruned). The tracking URI: this setting, else the sweep's (from its tracker), else
    MLFLOW_TRACKING_URI, as MLflow's users expect."""

    STATUS = {"completed": "FINISHED", "pruned": "KILLED", "paused": "KILLED"}
    FLUSH_SECONDS = 5.0

    def __init__(self, tracking_uri: str | None = None, experiment_name: str | None = None, artifacts: bool = True):
        self.tracking_uri, self.experiment_name, self.artifacts = tracking_uri, experiment_name, artifacts

    def start(self, params, trial, run_dir):
        sweep_attrs = getattr(trial, "study_attrs", {}) or {}
        self.client = _mlflow_client(self.tracking_uri or sweep_attrs.get(TRACKING_URI), self.setting)
        study = getattr(trial, "study_name", None)
        name = self.experiment_name or sweep_attrs.get(EXPERIMENT) or study or "sweep"
        tags = {"sweep.state": "running"}
        if study is not None:
            tags.update({"sweep.study": study, "sweep.trial": str(trial.number)})
        if sweep_attrs.get(PARENT_RUN):
            tags["mlflow.parentRunId"] = sweep_attrs[PARENT_RUN]
        from mlflow.entities import Param

        self.pending, self.sent_at = [], -math.inf
        self.run_id = self.client.create_run(_experiment_id(self.client, name, self.setting),
                                             run_name=_trial_name(trial), tags=tags).info.run_id
        values = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(values), 100):  # MLflow takes at most 100 parameters per call
            self.client.log_batch(self.run_id, params=values[i:i + 100])

    def log(self, metrics, step):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self.sent_at >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """One round trip for what the last seconds logged (MLflow's own background queue costs a second per run
        to shut down, more than a short trial's round trips)."""
        for i in range(0, len(self.pending), 1000):  # MLflow takes at most 1000 metrics per call
            self.client.log_batch(self.run_id, metrics=self.pending[i:i + 1000])
        self.pending, self.sent_at = [], time.monotonic()

    def artifact(self, path):
        if self.artifacts:
            self.client.log_artifact(self.run_id, str(path))

    def finish(self, state):
        self.flush()
        self.client.set_tag(self.run_id, "sweep.state", state)
        self.client.set_terminated(self.run_id, self.STATUS.get(state, "FAILED"))


# ------------------------------------------------------------------ Weights & Biases


class WandbLogger(Logger):
    """A W&B run per trial: group = the study's name, name = trial-<number>, the config, each step's metrics, and
    the state in its summary. Each run is finished before the next trial of the same worker starts."""

    def __init__(self, project: str = "sweep", entity: str | None = None, mode: str | None = None):
        self.project, self.entity, self.mode = project, entity, mode

    def start(self, params, trial, run_dir):
        wandb = _need("wandb", "wandb", self.setting)
        mode = self.mode or os.environ.get("WANDB_MODE") or "online"
        if mode not in ("online", "offline", "disabled", "shared"):
            raise UserError(f"{self.setting}.mode={mode!r} is invalid: expected online, offline or disabled")
        if mode in ("online", "shared") and not _wandb_key():
            raise UserError(f"{self.setting}: W&B's online mode needs an API key: set WANDB_API_KEY or run "
                            f"`wandb login`, or set {self.setting}.mode=offline")
        self.run = wandb.init(project=self.project, entity=self.entity, group=getattr(trial, "study_name", None),
                              name=_trial_name(trial), config=flatten(params), dir=str(run_dir), mode=mode,
                              reinit="create_new", settings=wandb.Settings(silent=True, console="off"))

    def log(self, metrics, step):
        self.run.log(dict(metrics), step=step)

    def finish(self, state):
        self.run.summary["state"] = state
        self.run.finish(exit_code=0 if state in ("completed", "pruned", "paused") else 1)


def _wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False
