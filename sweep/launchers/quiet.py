"""Imported first by the pool's fork server, which then imports the app's module once more for its workers: Hydra's
version_base warning, already shown once by the sweep, would otherwise print again for every worker."""

import warnings

warnings.filterwarnings("ignore", message=r"\s*The version_base parameter", category=UserWarning)
