"""Multi-process data parallelism on this CPU: 2 JAX processes (gloo) and
2 TensorFlow workers on localhost, each a process of its own, with ports
chosen free at run time, a time limit, and every process reaped."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_quadratic as kq
from examples_util import ROOT

BACKEND = keras.backend.backend()
engines = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras 3.15 has no torch distribution")
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")
EXAMPLE = os.path.join(ROOT, "examples", "cifar10.py")
INTERRUPTED = os.path.join(ROOT, "tests", "interrupted_example.py")


def _free_ports(n):
    """`n` distinct free ports (all held while they are chosen)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _environments(n=2):
    """One environment per process for this backend's engine."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("KERAS_DISTRIBUTION_") and k != "TF_CONFIG"}
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, base.get("PYTHONPATH")) if p)
    if BACKEND == "jax":
        address = f"localhost:{_free_ports(1)[0]}"
        return [dict(base, KERAS_DISTRIBUTION_NUM_PROCESSES=str(n),
                     KERAS_DISTRIBUTION_JOB_ADDRESSES=address,
                     KERAS_DISTRIBUTION_PROCESS_ID=str(i)) for i in range(n)]
    workers = [f"localhost:{port}" for port in _free_ports(n)]
    return [dict(base, TF_CONFIG=json.dumps({
        "cluster": {"worker": workers},
        "task": {"type": "worker", "index": i}})) for i in range(n)]


def _run_together(commands, environments, directory, timeout=300,
                  expect=0):
    """Starts one process per command and waits for all of them, or for
    the first that ends otherwise than `expect`, or the time limit; then
    kills what is left of their process groups. Their output goes to files
    in `directory` (never a pipe that could fill up while another process
    is waited for); returns it, one string per process."""
    logs = [os.path.join(directory, f"output{i}.txt")
            for i in range(len(commands))]
    processes = []
    try:
        for command, env, log in zip(commands, environments, logs):
            with open(log, "w") as f:
                processes.append(subprocess.Popen(
                    command, env=env, stdout=f, stderr=subprocess.STDOUT,
                    start_new_session=True))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            codes = [p.poll() for p in processes]
            if None not in codes or any(
                    code not in (None, expect) for code in codes):
                break
            time.sleep(0.2)
    finally:
        for p in processes:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:  # the group has ended
                pass
            p.wait()
    outputs = []
    for log in logs:
        with open(log) as f:
            outputs.append(f.read())
    for p, output in zip(processes, outputs):
        assert p.returncode == expect, output[-3000:]
    return outputs


@engines
def test_two_processes_split_the_batches_and_end_with_the_same_weights(
        tmp_path):
    outputs = [str(tmp_path / f"process{i}.npz") for i in range(2)]
    commands = [[sys.executable, WORKER, out] for out in outputs]
    if BACKEND == "jax":
        # process 1 starts JAX itself, as keras.distribution.initialize()
        # does: data_parallel takes the topology from JAX there
        commands[1].append("--keras-initializes")
    _run_together(commands, _environments(), tmp_path)
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
    # unseeded initializers agree across processes
    np.testing.assert_array_equal(first["unseeded"], second["unseeded"])
    weights = sorted(k for k in first.files if k.startswith("weight"))
    assert weights
    for key in weights:
        np.testing.assert_array_equal(first[key], second[key])


def _example(out, epochs):
    return [sys.executable, EXAMPLE, "--distribute", "--mock-data",
            "--mock-examples", "72", "--batch-size", "16", "--depth", "8",
            "--epochs", str(epochs), "--verbose", "0", "--output-dir", out]


@engines
def test_cifar10_example_two_processes_one_writer(tmp_path):
    out = str(tmp_path / "run")
    _run_together([_example(out, 1)] * 2, _environments(), tmp_path)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["processes"] == 2 and summary["devices"] >= 2
    assert summary["args"]["batch_size"] == 16  # the global batch
    with open(os.path.join(out, "log.csv")) as f:
        rows = f.read().strip().splitlines()
    # one writer: a header and one row, not one per process
    assert len(rows) == 2, rows
    assert set(os.listdir(out)) <= {"backup", "best.keras", "curves.png",
                                    "log.csv", "summary.json", "tensorboard",
                                    "momentum_rule.json"}
    assert summary["steps"] == 72 // 16


@engines
def test_cifar10_example_two_processes_resume(tmp_path):
    """Both processes preempted after epoch 1 of 2, then started again:
    both resume from process 0's backup and train epoch 2 alone (a process
    that did not would wait for the other's steps, and time out)."""
    out = str(tmp_path / "run")
    environments = [dict(env, TMPDIR=str(tmp_path))
                    for env in _environments()]
    _run_together([[sys.executable, INTERRUPTED] + _example(out, 2)[2:]] * 2,
                  environments, tmp_path, expect=3)
    # process 1's own directory, left by the abrupt end: its owner's alone
    left = [name for name in os.listdir(tmp_path)
            if name.startswith("keras-quadratic-")]
    assert len(left) == 1 and left[0].endswith("-process1"), left
    assert os.stat(tmp_path / left[0]).st_mode & 0o077 == 0
    assert os.path.isdir(os.path.join(out, "backup"))
    assert not os.path.exists(os.path.join(out, "summary.json"))
    environments = [dict(env, TMPDIR=str(tmp_path))
                    for env in _environments()]
    _run_together([_example(out, 2)] * 2, environments, tmp_path)
    with open(os.path.join(out, "log.csv")) as f:
        epochs = [row.split(",")[0] for row in f.read().split()[1:]]
    assert epochs == ["0", "1"]  # epoch 1 once, then epoch 2
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["steps"] == 2 * (72 // 16)  # the optimizer's, restored
    assert not os.path.exists(os.path.join(out, "backup"))  # done with it
    # the interrupted run's directory of process 1 was replaced, then
    # removed at the end
    assert not [name for name in os.listdir(tmp_path)
                if name.startswith("keras-quadratic-")]


@engines
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
    # the first process alone: its peer never starts
    ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
      "KERAS_DISTRIBUTION_PROCESS_ID": "0",
      "KERAS_DISTRIBUTION_JOB_ADDRESSES": "localhost:PORT"},
     "waiting up to 3 s for all 2 processes to join the coordinator "
     "localhost:"),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["localhost:PORT",
                                                     "localhost:PORT"]},
                               "task": {"type": "worker", "index": 0}})},
     "waiting up to 3 s for all 2 tasks of TF_CONFIG to start"),
])
def test_bad_topology_fails_clearly_and_soon(tmp_path, variables, message):
    if ("TF_CONFIG" in variables) != (BACKEND == "tensorflow"):
        pytest.skip("the other backend's variables")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KERAS_DISTRIBUTION_") and k != "TF_CONFIG"}
    ports = iter(_free_ports(2))
    env.update({k: re.sub("PORT", lambda _: str(next(ports)), v)
                for k, v in variables.items()})
    start = time.monotonic()
    result = subprocess.run(
        _example(str(tmp_path / "run"), 1) + ["--distribute-timeout", "3"],
        env=env, capture_output=True, text=True, timeout=120)
    assert message in result.stderr, result.stderr[-2000:]
    if "waiting up to" in message:
        # waiting inside the engine: ended by the deadline after 3 s
        assert result.returncode == 1, result.stderr[-2000:]
        assert "Timeout (0:00:03)!" in result.stderr
        assert time.monotonic() - start < 60
    else:
        assert result.returncode == 2, result.stderr[-2000:]
    assert not os.path.exists(tmp_path / "run")


@engines
def test_several_processes_do_not_download(tmp_path):
    empty = str(tmp_path / "no-dataset")
    command = _example(str(tmp_path / "run"), 1)
    command[command.index("--mock-data")] = "--data-dir"
    command.insert(command.index("--data-dir") + 1, empty)
    outputs = _run_together([command] * 2, _environments(), tmp_path,
                            expect=2)
    for output in outputs:
        assert "several processes do not download it" in output
        assert "--no-download was given" not in output


@pytest.mark.parametrize("variables,expected", [
    ({}, None),
    ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "1"}, None),  # one process
    ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
      "KERAS_DISTRIBUTION_PROCESS_ID": "1",
      "KERAS_DISTRIBUTION_JOB_ADDRESSES": "host0:1234,[::1]:99"},
     {"processes": 2, "process_id": 1,
      "addresses": [("host0", 1234), ("::1", 99)]}),
    ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
      "KERAS_DISTRIBUTION_JOB_ADDRESSES": "host0:1234"},
     "KERAS_DISTRIBUTION_PROCESS_ID is not set"),
    ({"KERAS_DISTRIBUTION_PROCESS_ID": "0"},
     "KERAS_DISTRIBUTION_NUM_PROCESSES is not set"),
    ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "3",
      "KERAS_DISTRIBUTION_PROCESS_ID": "0",
      "KERAS_DISTRIBUTION_JOB_ADDRESSES": "a:1,b:2"},
     "has 2 addresses for KERAS_DISTRIBUTION_NUM_PROCESSES=3"),
    ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
      "KERAS_DISTRIBUTION_PROCESS_ID": "0",
      "KERAS_DISTRIBUTION_JOB_ADDRESSES": "host0"},
     "expected addresses as host:port"),
    ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
      "KERAS_DISTRIBUTION_PROCESS_ID": "0",
      "KERAS_DISTRIBUTION_JOB_ADDRESSES": "::1:1234"},  # brackets needed
     "an IPv6 host in brackets"),
])
def test_jax_environment(monkeypatch, variables, expected):
    """What the standard variables describe (read the same on every
    backend; only JAX starts from them)."""
    for name in kq.distribute._JAX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=re.escape(expected)):
            kq.distribute._jax_environment()
    else:
        assert kq.distribute._jax_environment() == expected
        if expected:  # the addresses as JAX is given them: brackets kept
            assert ",".join(kq.distribute._text(address) for address in
                            expected["addresses"]) == variables[
                "KERAS_DISTRIBUTION_JOB_ADDRESSES"]


@pytest.mark.parametrize("config,expected", [
    (None, None),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker",
                                               "index": 0}}, None),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1", "[::1]:2"]},
      "task": {"type": "worker", "index": 1}},
     {"processes": 3, "process_id": 2,
      "addresses": [("c", 1), ("a", 1), ("::1", 2)]}),
    ({"cluster": {"worker": ["a:1", "b:1"]},
      "task": {"type": "worker", "index": True}}, "is not in the cluster"),
    ({"cluster": {"worker": ["a:1", "b:1"]},
      "task": {"type": "worker", "index": 2}}, "is not in the cluster"),
    ({"cluster": {"chief": ["a:1", "b:1"], "worker": ["c:1"]},
      "task": {"type": "worker", "index": 0}}, "at most one `chief`"),
    ({"cluster": {"ps": ["a:1"], "worker": ["c:1"]},
      "task": {"type": "worker", "index": 0}}, "Received roles"),
    ({"cluster": {"worker": ["a:1"]}}, "TF_CONFIG must be JSON"),
    ({"cluster": ["a:1", "b:1"], "task": {"type": "worker", "index": 0}},
     "`cluster` must map each role to a list"),
    ({"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}},
     "`cluster` must map each role to a list"),
    ({"cluster": {"worker": ["a:1", "b:\u0668\u0660"]},  # Arabic-Indic 80
      "task": {"type": "worker", "index": 0}},
     "expected addresses as host:port"),
])
def test_tf_environment(monkeypatch, config, expected):
    """What TF_CONFIG describes (read on every backend; only TensorFlow
    starts from it)."""
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if config is not None:
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=re.escape(expected)):
            kq.distribute._tf_environment()
    else:
        assert kq.distribute._tf_environment() == expected


@pytest.mark.parametrize("variables", [
    {"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                              "task": {"type": "worker", "index": 0}})},
    {"KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
     "KERAS_DISTRIBUTION_PROCESS_ID": "0",
     "KERAS_DISTRIBUTION_JOB_ADDRESSES": "localhost:1"},
])
def test_the_other_engines_variables_are_refused(monkeypatch, variables):
    """Several processes described for the other engine alone: refused
    before anything starts, rather than each process training alone and
    every one writing as process 0."""
    for name in kq.distribute._JAX_VARIABLES + ("TF_CONFIG",):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    ours = "TF_CONFIG" in variables if BACKEND == "tensorflow" else (
        "TF_CONFIG" not in variables)
    if BACKEND == "torch":
        with pytest.raises(RuntimeError, match="not available on the torch"):
            kq.distribute.data_parallel()
    elif ours:
        pytest.skip("this engine's own variables (started in the tests "
                    "above)")
    else:
        wanted = "jax" if BACKEND == "tensorflow" else "tensorflow"
        with pytest.raises(ValueError, match=f"KERAS_BACKEND={wanted}"):
            kq.distribute.data_parallel()


def test_deadline_ends_a_stuck_process_and_stands_down_after_a_block(
        tmp_path):
    """The bound on the engines' waits: a block that finishes leaves no
    timer behind; one that does not ends the process (exit code 1) after
    saying what it waited for."""
    script = (
        "import time\n"
        "from keras_quadratic.distribute import _deadline\n"
        "with _deadline(1, 'the quick block'):\n"
        "    pass\n"
        "time.sleep(2)\n"
        "print('stood down', flush=True)\n"
        "with _deadline(1, 'the stuck block'):\n"
        "    time.sleep(60)\n"
        "print('not reached', flush=True)\n")
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=ROOT),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "stood down" in result.stdout
    assert "not reached" not in result.stdout
    assert "waiting up to 1 s for the stuck block" in result.stderr
    assert "Timeout (0:00:01)!" in result.stderr
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"),
                                     1e10, "5", True, None])
def test_data_parallel_timeout_is_checked(timeout):
    with pytest.raises(ValueError, match="timeout: expected a number of "
                       "seconds > 0 and at most 604800"):
        kq.distribute.data_parallel(timeout)
    assert kq.distribute.check_timeout(604800) == 604800.0


def test_torch_distribution_is_detected_by_what_keras_can_do(monkeypatch):
    on_torch = keras.backend.backend() == "torch"

    def no_library(device_type=None):
        raise AttributeError("'NoneType' object has no attribute "
                             "'list_devices'")

    monkeypatch.setattr(keras.distribution, "list_devices", no_library)
    assert not kq.distribute.torch_distribution_available()
    monkeypatch.setattr(keras.distribution, "list_devices",
                        lambda device_type=None: ["cpu:0"])
    assert kq.distribute.torch_distribution_available() is on_torch
