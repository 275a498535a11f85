"""Callbacks the tests hand to hydra.sweeper.callbacks."""


class Record:
    """Writes a line per finished trial: its number and state."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, study, trial) -> None:
        with open(self.path, "a") as f:
            f.write(f"{study.study_name} {trial.number} {trial.state.name}\n")


class Broken:
    def __call__(self, study, trial) -> None:
        raise RuntimeError("the tracker is down")
