"""./run.sh end to end on the synthetic demo: nothing -> a validated submission, then all skipped."""

import os
import subprocess

from preprocessing import field_spec
from submissions import validate
from tests.conftest import REPO_ROOT


def run(artifacts, *options):
    environment = {**os.environ, "CRITEO_PNN_ARTIFACTS": str(artifacts), "TQDM_DISABLE": "1"}
    return subprocess.run(["bash", str(REPO_ROOT / "run.sh"), *options], cwd=REPO_ROOT,
                          env=environment, capture_output=True, text=True, timeout=900)


def test_demo_goes_from_nothing_to_a_validated_submission_and_reruns_skip(artifacts):
    options = ("--tag", "e2e", "--rows", "6000", "--set", "models=[lr]")
    first = run(artifacts, *options)
    assert first.returncode == 0, first.stderr[-3000:]
    spec = field_spec.FieldSpec.load(artifacts / "e2e" / "03_hash")
    assert spec.extra["source"] == "synthetic" and spec.rows["train"] == 5143
    files = sorted((artifacts / "submissions" / "csv").glob("*.csv*"))
    assert len(files) == 1
    validate.validate(files[0], rows=spec.rows["test"])
    assert "| lr |" in (artifacts / "e2e" / "REPORT.md").read_text()  # refreshed after the stages
    second = run(artifacts, *options)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "missing" not in second.stdout and "stale" not in second.stdout
    listing = run(artifacts, *options, "--list")
    assert "05_train/lr" in listing.stdout and "missing" not in listing.stdout


def requirements_choice(tmp_path, nvidia_smi: str | None, **environment) -> str:
    """What `./run.sh requirements` prints with a fake nvidia-smi (a shell body) on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    fake = folder / "nvidia-smi"
    if nvidia_smi is None:
        fake.unlink(missing_ok=True)
    else:
        fake.write_text(f"#!/bin/sh\n{nvidia_smi}\n")
        fake.chmod(0o755)
    path = f"{folder}:/usr/bin:/bin"
    result = subprocess.run(["bash", str(REPO_ROOT / "run.sh"), "requirements"], cwd=REPO_ROOT,
                            env={"PATH": path, **environment}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_venv_build_follows_the_gpu_that_nvidia_smi_reports(tmp_path):
    gpu = requirements_choice(tmp_path, "echo 'NVIDIA H200'; echo 'NVIDIA H200'")
    assert gpu == "requirements-gpu.txt: nvidia-smi sees NVIDIA H200 and 1 more"
    assert requirements_choice(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9") \
        .startswith("requirements.txt: no NVIDIA GPU")
    assert requirements_choice(tmp_path, None).startswith("requirements.txt: no NVIDIA GPU")
    assert requirements_choice(tmp_path, "echo 'NVIDIA H200'", CRITEO_PNN_GPU="0") \
        == "requirements.txt: CRITEO_PNN_GPU=0"
    assert requirements_choice(tmp_path, None, CRITEO_PNN_GPU="1") \
        == "requirements-gpu.txt: CRITEO_PNN_GPU=1"


def test_gpu_requirements_pin_the_same_versions_as_the_cpu_ones():
    def pins(name):
        lines = (REPO_ROOT / name).read_text().splitlines()
        return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    cpu, gpu = pins("requirements.txt"), pins("requirements-gpu.txt")
    assert [line.replace("tensorflow-cpu==", "tensorflow[and-cuda]==") for line in cpu] == gpu
