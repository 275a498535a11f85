"""The launchers: where trials run. Each implements the protocol in protocol.py; job.py is what their workers run.

    pool.py        worker processes on this machine, pinned to GPUs when it has them
    ray_pool.py    one Ray task per trial, on a local Ray or a cluster
    slurm_pool.py  one SLURM job per trial, through submitit
"""
