"""trainer.precision=auto: bf16 only where the hardware runs it natively and faster."""

import json

import pytest
import torch

import sweep.mlp.device as device


@pytest.fixture
def cpu_with(monkeypatch, tmp_path):
    real = device.cpu_flags

    def make(flags: set[str], speedup: float | None = None):
        monkeypatch.setattr(device, "cpu_flags", lambda: frozenset(flags))
        if speedup is not None:
            monkeypatch.setattr(device, "_measured_bf16_speedup", lambda cache_dir: speedup)
        return tmp_path
    yield make
    real.cache_clear()


def test_an_avx2_cpu_gets_fp32_without_measuring(cpu_with, monkeypatch):
    cpu_with({"avx", "avx2", "fma"})
    monkeypatch.setattr(device, "_measured_bf16_speedup", lambda cache_dir: pytest.fail("measured an AVX2 CPU"))
    assert device.choose_precision("auto", torch.device("cpu")) == "fp32"


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_a_cpu_with_native_bf16_gets_bf16_when_it_is_faster(cpu_with, flag):
    cpu_with({"avx2", "avx512f", flag}, speedup=2.5)
    assert device.choose_precision("auto", torch.device("cpu")) == "bf16"
    cpu_with({"avx2", "avx512f", flag}, speedup=1.05)  # flags say yes, the measurement says no
    assert device.choose_precision("auto", torch.device("cpu")) == "fp32"


def test_the_measurement_is_cached_per_cpu_and_torch(cpu_with, tmp_path):
    cpu_with({"avx512_bf16"})
    first = device._measured_bf16_speedup(tmp_path)
    cached = json.loads((tmp_path / "bf16_speedup.json").read_text())
    assert list(cached.values()) == [first] and torch.__version__ in next(iter(cached))
    (tmp_path / "bf16_speedup.json").write_text(json.dumps({k: 9.0 for k in cached}))
    assert device._measured_bf16_speedup(tmp_path) == 9.0  # read back, not measured again
    (tmp_path / "bf16_speedup.json").write_text("{broken")
    assert device._measured_bf16_speedup(tmp_path) > 0  # a damaged cache is measured again


def test_explicit_fp32_and_bf16_are_kept(cpu_with):
    cpu_with({"avx2"})
    assert device.choose_precision("fp32", torch.device("cpu")) == "fp32"
    assert device.choose_precision("bf16", torch.device("cpu")) == "bf16"  # with a warning (tested in test_train)


def test_the_machine_line_names_the_cpu_and_its_capability():
    line = device.describe()
    assert device.cpu_name() in line and torch.backends.cpu.get_cpu_capability() in line and torch.__version__ in line


@pytest.mark.parametrize("threads, cores, others, expected", [
    (2, 2, 0, 2),   # idle: torch's own count
    (2, 2, 2, 1),   # two CPU-bound neighbours on 2 cores: one thread
    (2, 2, 1, 1),   # one core left
    (8, 8, 3, 5),
    (1, 2, 0, 1),   # a pool worker's share is never raised
    (4, 4, 10, 1),  # never below one
])
def test_auto_threads_leave_the_cores_others_use(threads, cores, others, expected):
    assert device.auto_threads(threads, cores, others) == expected


def test_a_busy_machine_gives_an_auto_run_fewer_threads(monkeypatch):
    from sweep.mlp.train import apply_threads

    before = torch.get_num_threads()
    monkeypatch.setattr("sweep.mlp.train.cpu_cores", lambda: 2)
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr("sweep.mlp.train.others_running", lambda: 2.0)
        apply_threads("auto")
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        apply_threads(None)  # null keeps torch's default whatever the load
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_cpu_bound_neighbour_is_counted():
    import subprocess
    import sys

    hog = subprocess.Popen([sys.executable, "-c", "print('ready', flush=True)\nwhile True: pass"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert hog.stdout.readline().strip() == "ready"  # spinning from here on: always runnable
        assert device.others_running() >= 1
    finally:
        hog.kill()
        hog.wait()
