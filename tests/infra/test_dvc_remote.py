"""A shared DVC remote: machine A reproduces the pipeline and pushes; a second clone pulls and has nothing to rerun.

    pytest tests/infra/test_dvc_remote.py              # the small params validate
    pytest tests/infra/test_dvc_remote.py -m slow      # the whole pipeline at toy sizes in a clone, then two pulls
                                                 # (7.4 min on 2 shared cores: the repro 6.8 min, 20 stages)

The round trip that matters on a team: what one machine computed (data, models, metrics, reports) another gets by
`git pull` + `dvc pull`, and its `dvc repro` is a no-op (`dvc status` clean), so nothing is trained twice. Here "git
push/pull" is a clone of clone A's git repository; the DVC remote is a local folder (as on a shared filesystem) and,
where `moto[server]` and `dvc-s3` are installed, a real S3 API server on 127.0.0.1 (moto).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flows import workspace
from steps.core.config import load_config
from tests.conftest import REPO
from tests.helpers import TOY_SIZES
from tests.infra.servers import BIN, HOST, env_with_bin, free_port, http_ok, running

pytestmark = pytest.mark.infra  # real servers, a DVC remote, the dependency sets: tests/infra/

# What every dvc command here is given: the main pipeline. Without a target `dvc status` also checks the seed sweep
# (sweeps/dvc.yaml), which this test does not run (and `dvc pull` would fail on its outputs, pushed by nobody).
TARGETS: tuple[str, ...] = ("dvc.yaml",)
DVC = str(BIN / "dvc")


def test_the_small_params_are_valid() -> None:
    cfg = load_config(REPO / "params.yaml", TOY_SIZES)
    assert cfg.grpo.max_steps == 2 and cfg.evaluate.sampled_runs == 1


def _env() -> dict[str, str]:
    env = env_with_bin({"SPEECH_GRPO_TRACKING": "off",  # MLflow is tested in tests/infra/test_mlflow_server.py
                        # Hermetic S3 client: no credentials or config from this machine's ~/.aws, no metadata service
                        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                        "AWS_EC2_METADATA_DISABLED": "true"})
    for var in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "SPEECH_GRPO_ROOT", "AWS_PROFILE", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(var, None)  # the clone's own code and settings only
    return env


def _sh(*cmd: str, cwd: Path, timeout: float = 120) -> str:
    out = subprocess.run(list(cmd), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    tail = f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert out.returncode == 0, f"{' '.join(cmd)} in {cwd}: exit {out.returncode}\n{tail}"
    return out.stdout + out.stderr


def _git(*args: str, cwd: Path) -> str:
    return _sh("git", "-c", "user.name=t", "-c", "user.email=t@t", *args, cwd=cwd)


def _timed(*cmd: str, cwd: Path, timeout: float = 120) -> tuple[str, float]:
    start = time.monotonic()
    out = _sh(*cmd, cwd=cwd, timeout=timeout)
    return out, time.monotonic() - start


def _report(line: str) -> None:
    print(f"\n{line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def machine_a(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Clone A: small params committed, a local-folder remote as default, the pipeline reproduced and pushed."""
    base = tmp_path_factory.mktemp("remote")
    root, remote = base / "a", base / "shared-remote"
    _git("clone", "-q", str(REPO), str(root), cwd=REPO)
    workspace.write_overrides(root / "params.yaml", TOY_SIZES)
    _sh(DVC, "remote", "add", "-d", "shared", str(remote), cwd=root)  # .dvc/config: committed, the team's remote
    _git("add", "-A", cwd=root)
    _git("commit", "-qm", "small params, shared remote", cwd=root)
    out, repro_s = _timed(DVC, "repro", *TARGETS, cwd=root, timeout=900)
    ran = out.count("Running stage '")
    _report(f"machine A: dvc repro {' '.join(TARGETS)}: {ran} stages in {repro_s:.1f} s")
    _git("add", "dvc.lock", cwd=root)
    _git("commit", "-qm", "dvc.lock of the small run", cwd=root)
    out, push_s = _timed(DVC, "push", *TARGETS, cwd=root, timeout=300)
    _report(f"machine A: dvc push in {push_s:.1f} s: {out.strip().splitlines()[-1]}")
    assert "in sync" in _sh(DVC, "status", "--cloud", *TARGETS, cwd=root)
    return {"root": root, "remote": remote, "stages_ran": ran}


def _second_clone(machine_a: dict[str, Any], path: Path) -> Path:
    _git("clone", "-q", str(machine_a["root"]), str(path), cwd=path.parent)  # stands in for git push + git pull
    return path


def _assert_up_to_date(clone: Path, machine_a: dict[str, Any]) -> None:
    """`dvc status` clean and `dvc repro` a no-op, and the outputs are A's, byte for byte."""
    status = _sh(DVC, "status", *TARGETS, cwd=clone)
    assert "Data and pipelines are up to date" in status, status
    out, repro_s = _timed(DVC, "repro", *TARGETS, cwd=clone)  # the stages A ran, all skipped
    assert "Running stage" not in out, out
    assert out.count("didn't change, skipping") == machine_a["stages_ran"], out
    _report(f"{clone.name}: dvc repro no-op in {repro_s:.1f} s")
    for path in _outputs(machine_a["root"]):
        assert (clone / path).read_bytes() == (machine_a["root"] / path).read_bytes(), path


def _outputs(root: Path) -> list[Path]:
    """A few tracked outputs to compare byte for byte: the last stage's report if it ran, else data manifests."""
    report = root / "reports" / "report.json"
    return [report.relative_to(root)] if report.exists() else sorted(
        p.relative_to(root) for p in (root / "data" / "prepared").rglob("report.json"))


@pytest.mark.slow
def test_a_second_clone_pulls_from_a_shared_folder_and_has_nothing_to_rerun(machine_a, tmp_path) -> None:
    clone = _second_clone(machine_a, tmp_path / "b")
    out, pull_s = _timed(DVC, "pull", *TARGETS, cwd=clone, timeout=300)
    _report(f"b: dvc pull (shared folder) in {pull_s:.1f} s: {out.strip().splitlines()[-1]}")
    _assert_up_to_date(clone, machine_a)


@pytest.mark.slow
def test_the_same_round_trip_through_an_s3_server(machine_a, tmp_path) -> None:
    pytest.importorskip("dvc_s3", reason="dvc-s3 not installed: pip install dvc-s3")
    pytest.importorskip("moto.server", reason="moto[server] not installed")
    import boto3

    port = free_port()
    endpoint = f"http://{HOST}:{port}"
    with running([str(BIN / "moto_server"), "-H", HOST, "-p", str(port)], tmp_path / "moto.log", _env(), tmp_path,
                 ready=lambda: http_ok(f"{endpoint}/moto-api/"), timeout=60, what="moto_server"):
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
        s3.create_bucket(Bucket="speech-grpo")

        def configure(root: Path) -> None:
            # As docs/cluster.md, but --local: this endpoint lives only as long as the test.
            _sh(DVC, "remote", "add", "--local", "s3", "s3://speech-grpo/dvc", cwd=root)
            _sh(DVC, "remote", "modify", "--local", "s3", "endpointurl", endpoint, cwd=root)
            _sh(DVC, "remote", "modify", "--local", "s3", "access_key_id", "test", cwd=root)
            _sh(DVC, "remote", "modify", "--local", "s3", "secret_access_key", "test", cwd=root)

        configure(machine_a["root"])
        out, push_s = _timed(DVC, "push", "-r", "s3", *TARGETS, cwd=machine_a["root"], timeout=300)
        _report(f"machine A: dvc push -r s3 in {push_s:.1f} s: {out.strip().splitlines()[-1]}")
        listed = s3.list_objects_v2(Bucket="speech-grpo", Prefix="dvc/")
        assert listed["KeyCount"] > 0

        clone = _second_clone(machine_a, tmp_path / "c")
        configure(clone)
        out, pull_s = _timed(DVC, "pull", "-r", "s3", *TARGETS, cwd=clone, timeout=300)
        _report(f"c: dvc pull -r s3 in {pull_s:.1f} s: {out.strip().splitlines()[-1]}")
        _assert_up_to_date(clone, machine_a)
