"""Multi-process data parallelism on this CPU: 2 JAX processes (gloo) and
2 TensorFlow workers on localhost, each a process of its own, with ports
chosen free at run time, a time limit, and every process reaped."""

import json
import os
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from examples_util import ROOT

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras 3.15 has no torch distribution")
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")
EXAMPLE = os.path.join(ROOT, "examples", "cifar10.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _environments(n=2):
    """One environment per process for this backend's engine."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("KERAS_DISTRIBUTION_") and k != "TF_CONFIG"}
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, base.get("PYTHONPATH")) if p)
    if BACKEND == "jax":
        address = f"localhost:{_free_port()}"
        return [dict(base, KERAS_DISTRIBUTION_NUM_PROCESSES=str(n),
                     KERAS_DISTRIBUTION_JOB_ADDRESSES=address,
                     KERAS_DISTRIBUTION_PROCESS_ID=str(i)) for i in range(n)]
    workers = [f"localhost:{_free_port()}" for _ in range(n)]
    return [dict(base, TF_CONFIG=json.dumps({
        "cluster": {"worker": workers},
        "task": {"type": "worker", "index": i}})) for i in range(n)]


def _run_together(commands, environments, timeout=300):
    """Starts one process per command, waits for all; kills them all
    (their process groups) on a failure or the time limit."""
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
                 for command, env in zip(commands, environments)]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-3000:]
    return outputs


def test_two_processes_split_the_batches_and_end_with_the_same_weights(
        tmp_path):
    outputs = [str(tmp_path / f"process{i}.npz") for i in range(2)]
    _run_together([[sys.executable, WORKER, out] for out in outputs],
                  _environments())
    first, second = (np.load(out) for out in outputs)
    assert {int(first["process_id"]), int(second["process_id"])} == {0, 1}
    assert int(first["processes"]) == 2 and int(first["devices"]) >= 2
    # each global batch of 8 split: disjoint halves that make up the epoch
    seen = [set(first["ids"].tolist()), set(second["ids"].tolist())]
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(32))
    assert len(first["ids"]) == len(second["ids"]) == 16
    # ReLinear's step ratios hold (gamma_g 0.25, gamma_b 0.5, linear 1)
    for data in (first, second):
        np.testing.assert_allclose(data["gate_ratio"], 0.25, rtol=1e-4)
        np.testing.assert_allclose(data["square_ratio"], 0.5, rtol=1e-4)
        np.testing.assert_allclose(data["linear_ratio"], 1.0, rtol=1e-4)
        assert np.all(data["relinear_gate"] > 0)  # QuadraticMonitor ran
    weights = sorted(k for k in first.files if k.startswith("weight"))
    assert weights
    for key in weights:
        np.testing.assert_array_equal(first[key], second[key])


def _example(out, epochs):
    return [sys.executable, EXAMPLE, "--distribute", "--mock-data",
            "--mock-examples", "72", "--batch-size", "16", "--depth", "8",
            "--epochs", str(epochs), "--verbose", "0", "--output-dir", out]


@pytest.mark.skipif(BACKEND != "jax", reason="one end-to-end run suffices; "
                    "the TensorFlow workers are shown by the test above")
def test_cifar10_example_two_processes_one_writer(tmp_path):
    out = str(tmp_path / "run")
    environments = _environments()
    _run_together([_example(out, 1)] * 2, environments)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["processes"] == 2 and summary["devices"] >= 2
    assert summary["args"]["batch_size"] == 16  # the global batch
    with open(os.path.join(out, "log.csv")) as f:
        rows = f.read().strip().splitlines()
    # one writer: a header and one row, not one per process
    assert len(rows) == 2, rows
    assert set(os.listdir(out)) <= {"backup", "best.keras", "curves.png",
                                    "log.csv", "summary.json", "tensorboard"}
    assert summary["steps"] == 72 // 16


@pytest.mark.parametrize("variables,message", [
    ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
      "KERAS_DISTRIBUTION_PROCESS_ID": "2",
      "KERAS_DISTRIBUTION_JOB_ADDRESSES": "localhost:1"},
     "KERAS_DISTRIBUTION_PROCESS_ID must be an integer from 0 to 1"),
    ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
      "KERAS_DISTRIBUTION_PROCESS_ID": "1",
      "KERAS_DISTRIBUTION_JOB_ADDRESSES": "localhost:PORT"},
     "did not answer within 3 s"),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["localhost:1"]},
                               "task": {"type": "worker", "index": 3}})},
     "task 'worker' 3 is not in the cluster"),
])
def test_bad_topology_fails_clearly_and_soon(tmp_path, variables, message):
    if ("TF_CONFIG" in variables) != (BACKEND == "tensorflow"):
        pytest.skip("the other backend's variables")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KERAS_DISTRIBUTION_") and k != "TF_CONFIG"}
    env.update({k: v.replace("PORT", str(_free_port()))
                for k, v in variables.items()})
    result = subprocess.run(
        _example(str(tmp_path / "run"), 1) + ["--distribute-timeout", "3"],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert not os.path.exists(tmp_path / "run")
