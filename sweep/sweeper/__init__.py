"""The sweeper: settings (../settings.py), the search space, the study and its storage, the scheduling loop, the
end-of-sweep summary and report, and the task's side (sweep.trial()). It knows nothing of the app it sweeps."""
