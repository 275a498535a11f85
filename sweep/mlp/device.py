"""The machine a run trains on: which device, which precision it runs fast, and what CPU it is.

bf16 is only fast where the hardware has it: CUDA GPUs with bf16 units, and CPUs with AVX512-BF16 or AMX. On an
AVX2-only CPU, autocast to bf16 emulates it and ran a CIFAR-10 epoch 200x slower, so `trainer.precision: auto`
reads the CPU's flags, and confirms a candidate with a few milliseconds of matmuls, cached per machine.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from functools import cache
from pathlib import Path

import torch

from sweep import atomic
from sweep.errors import UserError
from sweep.launchers.protocol import cpu_cores

log = logging.getLogger(__name__)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 matmuls
BF16_MIN_SPEEDUP = 1.2  # a candidate CPU must run bf16 matmuls at least this much faster to get bf16


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device='cuda' is invalid: no CUDA GPU is visible; use trainer.device=cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.device='mps' is invalid: MPS is not available; use trainer.device=cpu or auto")
    return torch.device(name)


def auto_threads(threads: int, cores: int, others: float) -> int:
    """trainer.threads=auto: torch's thread count, but no more threads than the cores other processes leave free
    (at least one). On 2 cores beside two CPU-bound processes, the tutorial MLP's epoch took 2.4x longer with 2
    threads than with 1 (bench/threads.py), even with passive waiting."""
    return max(1, min(threads, math.floor(cores - others + 0.5)))


def others_running(samples: int = 5, pause: float = 0.01) -> float:
    """How many other processes want a CPU right now: the median of a few readings of the kernel's count of runnable
    tasks, less this one (Linux's /proc/stat); 0 where it cannot be read. The load average would lag by a minute."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat") as f:
                counts += [int(line.split()[1]) - 1 for line in f if line.startswith("procs_running")]
        except (OSError, ValueError, IndexError):
            return 0.0
        if i < samples - 1:
            time.sleep(pause)
    return float(sorted(counts)[len(counts) // 2]) if counts else 0.0


@cache
def cpu_flags() -> frozenset[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@cache
def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """What the CPU offers a matmul: torch's own dispatch level, and native bf16 when the flags show it."""
    level = torch.backends.cpu.get_cpu_capability()  # e.g. AVX2, AVX512
    extra = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX")) if flag in cpu_flags()]
    return " + ".join([level, *extra])


def describe() -> str:
    """One line naming the machine, for benchmark headers and metrics."""

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu_name()} ({cpu_capability()}), {cpu_cores()} cores{gpu}, torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def choose_precision(setting: str, device: torch.device, cache_dir: Path | None = None) -> str:
    """The precision a run uses: bf16 only where it is native and faster, fp32 otherwise."""
    native = bf16_native(device, cache_dir)
    if setting == "auto":
        return "bf16" if native else "fp32"
    if setting == "bf16" and not native:
        log.warning("trainer.precision=bf16 on %s, which has no native bf16 (%s): it is emulated and can be "
                    "many times slower than fp32; trainer.precision=auto picks fp32 here",
                    device.type, cpu_capability() if device.type == "cpu" else device.type)
    return setting


def bf16_native(device: torch.device, cache_dir: Path | None = None) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    if not any(flag in cpu_flags() for flag in BF16_FLAGS):
        return False
    return _measured_bf16_speedup(cache_dir) >= BF16_MIN_SPEEDUP


def _measured_bf16_speedup(cache_dir: Path | None) -> float:
    """bf16 over fp32 matmul speed on this CPU, measured once (about 50 ms) and cached per CPU and torch version."""
    key = f"{cpu_name()}|{cpu_capability()}|torch {torch.__version__}|{torch.get_num_threads()} threads"
    path = (cache_dir or Path.home() / ".cache" / "sweep") / "bf16_speedup.json"
    try:
        known = json.loads(path.read_text())
        if isinstance(known, dict) and isinstance(known.get(key), (int, float)):
            return float(known[key])
    except (OSError, ValueError):
        known = {}
    a, b = torch.randn(256, 3072), torch.randn(3072, 512)

    def per_product(dtype, limit: float = math.inf) -> float:
        """Seconds per product: 5 after a warm-up, fewer once they have taken `limit` seconds."""
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # warm up
        start, done = time.perf_counter(), 0
        while done < 5 and (done == 0 or time.perf_counter() - start < limit):
            x @ y
            done += 1
        return (time.perf_counter() - start) / done

    fp32 = per_product(torch.float32)
    speedup = fp32 / per_product(torch.bfloat16, limit=5 * fp32)  # where bf16 is emulated, one product tells
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps({**(known if isinstance(known, dict) else {}), key: speedup}))
    except OSError:
        pass  # a read-only home: measure again next time
    return speedup
