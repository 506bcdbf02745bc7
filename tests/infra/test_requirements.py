"""requirements/gpu.txt (the GPU dependency set, with vLLM) and requirements/lock.txt (the CPU set's resolved pins)
stay in step with pyproject.toml.

The GPU set installs as `pip install -r requirements/gpu.txt && pip install --no-deps -e .` (docs/gpu.md), so it must
repeat every dependency of pyproject.toml and differ only where vLLM forces it. The lock is the constraints file of the
README's two install commands (and .ci/run's): it pins every dependency, direct or not, at one version.

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
LOCK = REPO / "requirements" / "lock.txt"
LOCKED_INSTALL = "pip install -c requirements/lock.txt -e "
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


def test_lock_pins_every_dependency_of_pyproject_at_a_version_its_pin_allows() -> None:
    lock = requirements(LOCK)
    loose = {name: str(r.specifier) for name, r in lock.items()
             if len(r.specifier) != 1 or next(iter(r.specifier)).operator != "==" or "+" in str(r.specifier)}
    assert loose == {}, "the lock pins exact public versions only (name==x.y.z): regenerate it (its header says how)"
    project = pyproject()
    assert canonicalize_name(project["name"]) not in lock, "the project itself does not belong in its lock"
    wanted = by_name(project["dependencies"] + project["optional-dependencies"]["dev"])
    missing = sorted(set(wanted) - set(lock))
    assert missing == [], f"{missing} are in pyproject.toml but not in requirements/lock.txt: regenerate the lock"
    versions = {name: next(iter(lock[name].specifier)).version for name in wanted}
    outside = {name: (versions[name], str(req.specifier)) for name, req in wanted.items()
               if not req.specifier.contains(versions[name], prereleases=True)}
    assert outside == {}, "the lock's version breaks pyproject.toml's pin: regenerate the lock"


def test_readme_and_ci_install_through_the_lock() -> None:
    commands = [line.split("#", 1)[0].strip() for line in (REPO / "README.md").read_text().splitlines()
                if line.startswith("python3 -m venv .venv && ")][:2]
    assert len(commands) == 2 and all(LOCKED_INSTALL in c for c in commands), commands
    assert commands[0].endswith("&& dvc repro") and commands[1].endswith("&& pytest")
    assert commands[1] in (REPO / ".ci" / "run").read_text(), "CI must run the README's test command as written"
