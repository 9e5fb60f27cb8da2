import csv
import json
import os

import keras
import pytest
from examples_util import load_example
from examples_util import run_example

cifar10 = load_example("cifar10")

SMALL = ["--mock-data", "--mock-examples", "64", "--batch-size", "32",
         "--depth", "8", "--verbose", "0"]


def _epochs_logged(out):
    with open(os.path.join(out, "log.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_end_to_end_on_mock_data(tmp_path):
    out = str(tmp_path / "run")
    summary = cifar10.main(SMALL + ["--epochs", "2", "--output-dir", out,
                                    "--gate-l2", "1e-4"])
    for name in ("summary.json", "curves.png", "best.keras", "log.csv"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert os.listdir(os.path.join(out, "tensorboard"))
    with open(os.path.join(out, "summary.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(summary))
    for key in ("test_accuracy", "params", "epochs", "backend", "devices",
                "seconds_per_epoch"):
        assert key in saved
    assert saved["backend"] == keras.backend.backend()
    assert saved["epochs"] == 2 and saved["devices"] == 1
    assert saved["steps"] == 4
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert _epochs_logged(out) == [0, 1]
    model = keras.saving.load_model(os.path.join(out, "best.keras"))
    assert model.count_params() == saved["params"]


class _Interrupt(Exception):
    pass


class _KillAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupt()


def test_resume_after_interruption(tmp_path):
    out = str(tmp_path / "run")
    args = SMALL + ["--epochs", "3", "--output-dir", out]
    with pytest.raises(_Interrupt):
        cifar10.main(args, extra_callbacks=[_KillAfterEpoch(1)])
    assert _epochs_logged(out) == [0, 1]
    assert os.path.isdir(os.path.join(out, "backup"))
    summary = cifar10.main(args)
    assert _epochs_logged(out) == [0, 1, 2]  # epoch 2 only, nothing redone
    assert summary["steps"] == 6  # the optimizer state came back too
    assert not os.path.exists(os.path.join(out, "backup"))


def test_offline_without_data_gives_a_short_message(tmp_path):
    result = run_example("cifar10", ["--data-dir", str(tmp_path / "empty"),
                                     "--epochs", "1"], timeout=300)
    assert result.returncode == 2
    assert "--mock-data" in result.stderr and "--data-dir" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="keras.distribution.DataParallel runs on JAX")
def test_data_parallel_on_two_jax_devices(tmp_path):
    out = str(tmp_path / "dp")
    result = run_example(
        "cifar10", SMALL + ["--epochs", "1", "--distribute",
                            "--output-dir", out],
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2",
             "KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["devices"] == 2


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="the torch backend's answer to --distribute")
def test_distribute_on_torch_says_not_supported(tmp_path):
    result = run_example("cifar10", SMALL + ["--distribute", "--output-dir",
                                             str(tmp_path)], timeout=300)
    assert result.returncode == 2
    assert "not supported yet" in result.stderr
