"""Which torch the worker set-up installs (no QGIS, no network: the choice and the pip
commands it leads to). PyTorch's CPU index cannot be reached from here; the fallback to the
default index is run for real in tests/qgis/test_setup.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from coderic_qgis.setup_env import CPU_INDEX, BasePython, choose_torch, plan_setup
from testdata import ROOT

BASE = BasePython(("python3",), (3, 11), "test")


@pytest.mark.parametrize("system,machine,nvidia,build", [
    ("Linux", "x86_64", False, "cpu-only"),  # the usual laptop: CPU-only torch from PyTorch's index
    ("Linux", "aarch64", False, "cpu-only"),
    ("Linux", "x86_64", True, "with-cuda"),  # an NVIDIA GPU: the package index's CUDA build
    ("Windows", "AMD64", False, "default"),  # the index's torch has no CUDA libraries there
    ("Darwin", "arm64", False, "default"),
])
def test_choice(system, machine, nvidia, build):
    choice = choose_torch(system, machine, nvidia)
    assert choice.build == build
    assert (CPU_INDEX in choice.index_options) == (build == "cpu-only")
    assert choice.fallback == (build == "cpu-only")
    # the estimate said before anything is downloaded: download and disk size, in GB
    assert "downloads about" in choice.text() and "GB on disk" in choice.text()


def test_cpu_environment_is_estimated_under_1_5_gb():
    cpu, cuda = choose_torch("Linux", "x86_64", False), choose_torch("Linux", "x86_64", True)
    gb = lambda text: float(text.split()[1])  # noqa: E731 - "about 1.2 GB"
    assert gb(cpu.disk) <= 1.5 < gb(cuda.disk)


def test_plan_installs_torch_from_the_cpu_index_with_a_fallback(tmp_path):
    plan = plan_setup(BASE, tmp_path / "env", ROOT, torch=choose_torch("Linux", "x86_64", False))
    step = next(s for s in plan.steps if s.name == "torch")
    i = step.argv.index("--index-url")
    assert step.argv[i + 1] == CPU_INDEX and any(a.startswith("torch") for a in step.argv)
    assert step.fallback is not None and "--index-url" not in step.fallback
    assert [a for a in step.fallback if a.startswith("torch")] == [a for a in step.argv if a.startswith("torch")]
    assert "CPU-only build" in step.label and "GB to download" in step.label
    # the project's own step uses the default index: its torch is already installed
    assert "--index-url" not in next(s for s in plan.steps if s.name == "project").argv


def test_own_index_wins_and_a_gpu_machine_gets_the_default(tmp_path):
    own = plan_setup(BASE, tmp_path / "a", ROOT, ["--index-url", "https://mirror.example/simple"],
                     torch=choose_torch("Linux", "x86_64", False))
    argv = next(s for s in own.steps if s.name == "torch").argv
    assert CPU_INDEX not in argv and "https://mirror.example/simple" in argv
    assert next(s for s in own.steps if s.name == "torch").fallback is None
    gpu = plan_setup(BASE, tmp_path / "b", ROOT, torch=choose_torch("Linux", "x86_64", True))
    step = next(s for s in gpu.steps if s.name == "torch")
    assert "--index-url" not in step.argv and step.fallback is None


def test_measured_sizes_are_committed():
    """The estimates name their measurement (results/worker_env_size.json)."""
    import json

    res = json.loads((ROOT / "results/worker_env_size.json").read_text())
    assert res["cpu_environment_gb"] <= 1.5
    assert Path(ROOT / "benchmarks/worker_env_size.py").is_file()
