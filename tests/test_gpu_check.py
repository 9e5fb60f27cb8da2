import json
import os
import subprocess
import sys

import keras
import pytest

from examples_util import ROOT


def _env(**extra):
    """gpu.sh runs the `python3` on PATH: this test's."""
    path = os.pathsep.join([os.path.dirname(sys.executable),
                            os.environ.get("PATH", "")])
    return dict(os.environ, PATH=path, **extra)


@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="the GPU check runs the jax and torch backends: "
                    "their environments run it")
def test_smoke_mode_runs_without_tensorflow(tmp_path):
    # A `tensorflow` that cannot be imported: the check must not need it.
    blocker = tmp_path / "blocked" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise ImportError('no TensorFlow in the GPU check')\n")
    env = _env(PYTHONPATH=str(blocker.parent))
    env.pop("KERAS_BACKEND", None)
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "benchmarks", "gpu.sh"), "--smoke",
         "--output", str(tmp_path / "out" / "gpu_check.json"),
         "--backends", keras.backend.backend()],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[
        -3000:]
    assert "| runner | model | batch | dtype | step | images/s |" in (
        result.stdout)
    with open(tmp_path / "out" / "gpu_check.json") as f:
        report = json.load(f)
    assert report["smoke"] is True
    runners = {r["runner"]: r for r in report["reports"]}
    backend = keras.backend.backend()
    assert set(runners) == {"reference", backend}
    # The backend of this test environment is installed: its rows ran.
    if backend in runners:
        ran = runners[backend]
        assert not ran.get("error"), ran
        assert ran["device"]["platform"] == "cpu"
        rows = ran["rows"]
        assert {row["dtype"] for row in rows} == {"float32", "bfloat16"}
        assert not [row for row in rows if "error" in row], rows
        measured = [row for row in rows if "images_per_second" in row]
        assert measured and all(r["images_per_second"] > 0 for r in measured)
        # only the time budget may leave a row out (a slow, busy machine)
        assert all("images_per_second" in r or r["skipped"] == "time budget"
                   for r in rows)
        accuracy = ran["training"]["test_accuracy_per_epoch"]
        assert len(accuracy) == 1 and 0.0 <= accuracy[0] <= 1.0


def test_without_smoke_a_cpu_backend_is_a_failure(tmp_path):
    env = _env()
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "benchmarks", "gpu.sh"), "--output",
         str(tmp_path / "gpu_check.json"), "--backends",
         keras.backend.backend() if keras.backend.backend() != "tensorflow"
         else "jax"],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 1
    assert "FAIL: " in result.stdout
