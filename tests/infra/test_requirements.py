"""requirements/gpu.txt (the GPU dependency set, with vLLM) stays in step with pyproject.toml's pins.

The GPU set installs as `pip install -r requirements/gpu.txt && pip install --no-deps -e .` (docs/gpu.md), so it must
repeat every dependency of pyproject.toml and differ only where vLLM forces it.

    pytest tests/infra/test_requirements.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

pytestmark = pytest.mark.infra  # real servers, a DVC remote, the dependency sets: tests/infra/

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

GPU = REPO / "requirements" / "gpu.txt"
GPU_DEV = REPO / "requirements" / "gpu-dev.txt"
# vllm 0.33.0 pins torch 2.14.0 and needs transformers < 5.21 and fastapi < 0.137 (so prefect 3.7.7).
DIFFERS = {"torch", "transformers", "prefect", "fastapi"}
ONLY_GPU = {"vllm", "torchaudio", "torchvision"}


def requirements(path: Path) -> dict[str, Requirement]:
    out: dict[str, Requirement] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def by_name(lines: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def test_gpu_set_repeats_every_pin_of_pyproject_and_differs_only_where_vllm_forces_it() -> None:
    cpu, gpu = by_name(pyproject()["dependencies"]), requirements(GPU)
    assert set(gpu) - set(cpu) == ONLY_GPU
    assert set(cpu) - set(gpu) == set(), "add the new pyproject.toml dependency to requirements/gpu.txt"
    same = {name: (str(cpu[name].specifier), str(gpu[name].specifier)) for name in cpu if name not in DIFFERS}
    assert {n: s for n, s in same.items() if s[0] != s[1]} == {}
    for name in DIFFERS:
        assert cpu[name].specifier != gpu[name].specifier, f"{name} no longer differs: drop it from DIFFERS"


def test_gpu_dev_adds_the_dev_extra() -> None:
    assert "-r gpu.txt" in GPU_DEV.read_text().splitlines()
    dev = by_name(pyproject()["optional-dependencies"]["dev"])
    assert {n: str(r.specifier) for n, r in requirements(GPU_DEV).items()} == {
        n: str(r.specifier) for n, r in dev.items()}
