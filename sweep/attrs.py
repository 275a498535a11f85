"""Names the sweeper, the task side and the report share: trial attributes and the job's environment."""

# Set for each job through hydra.job.env_set: the trial's number, its study, and the study's storage, whose
# ${oc.env:VAR} references travel as <env:VAR> (Hydra resolves env_set values, twice) and are filled in by the job.
TRIAL_ENV, STUDY_ENV, STORAGE_ENV = "SWEEP_TRIAL", "SWEEP_STUDY", "SWEEP_STORAGE"

# Trial user attributes (the report shows them)
FAIL_REASON = "fail_reason"  # why a FAIL trial failed, in one line
STOP_REASON = "stop_reason"  # why a pruned trial stopped
RUN_DIR = "run_dir"  # the job's output folder
NODE = "node"  # where it ran: Ray's node id under Ray, else the host name
GPUS = "gpus"  # the CUDA_VISIBLE_DEVICES it was given, "" for none
STARTUP_SECONDS = "startup_seconds"  # from being asked to starting in a worker (worker start-up, queueing)
RUN_SECONDS = "run_seconds"  # the job itself, in its worker
REPEAT_OF = "repeat_of"  # hydra.sweeper.repeats: the trial whose configuration this one runs again
SEED = "repeat_seed"  # ... and the seed it runs with (in hydra.sweeper.seed_key)
SWEEP_ATTRS = (FAIL_REASON, STOP_REASON, RUN_DIR, NODE, GPUS, STARTUP_SECONDS, RUN_SECONDS)  # left behind by a retry
REPEAT_ATTRS = (REPEAT_OF, SEED)  # kept by a retry; meaningless in another study

# Trial system attributes
DEADLINE = "sweep:deadline"  # unix time at which hydra.sweeper.time_budget runs out
HEARTBEAT = "sweep:heartbeat"  # unix time the sweep last vouched for the running trial
FAILED_TRIAL, RETRY_HISTORY = "failed_trial", "retry_history"  # a retry's origin: Optuna's own keys for retries
PAUSED = "sweep:paused"  # the step a RUNNING trial paused at under asha, waiting to be promoted (None once promoted)
PROMOTED = "sweep:promoted"  # the last step a paused trial was promoted past: its next run resumes from there
RESUMABLE = "sweep:resumable"  # its task asked sweep.trial().checkpoint_dir, so it keeps state and can pause
