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
    second = run(artifacts, *options)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "missing" not in second.stdout and "stale" not in second.stdout
    listing = run(artifacts, *options, "--list")
    assert "05_train/lr" in listing.stdout and "missing" not in listing.stdout
