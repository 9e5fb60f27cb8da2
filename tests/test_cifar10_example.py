import csv
import json
import os

import keras
import pytest
from examples_util import load_example
from examples_util import run_example

import keras_quadratic as kq
from keras_quadratic import cifar

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


def test_resume_after_interruption(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = SMALL + ["--epochs", "3", "--output-dir", out]
    with pytest.raises(_Interrupt):
        cifar10.main(args, extra_callbacks=[_KillAfterEpoch(1)])
    assert _epochs_logged(out) == [0, 1]
    assert os.path.isdir(os.path.join(out, "backup"))
    # the other momentum rule would misread the backup's momentum
    with pytest.raises(SystemExit) as exit_:
        cifar10.main(args + ["--sgd", "keras"])
    assert exit_.value.code == 2
    assert _epochs_logged(out) == [0, 1]
    # fewer epochs than the backup has done: an error, the backup kept
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cifar10.main(SMALL + ["--epochs", "1", "--output-dir", out])
    assert exit_.value.code == 2
    assert "has completed 2 epochs already" in capsys.readouterr().err
    summary = cifar10.main(args)
    assert (f"outputs: {out}; resuming after epoch 2 from the backup in "
            f"{os.path.join(out, 'backup')}") in capsys.readouterr().out
    assert _epochs_logged(out) == [0, 1, 2]  # epoch 2 only, nothing redone
    assert summary["steps"] == 6  # the optimizer state came back too
    assert not os.path.exists(os.path.join(out, "backup"))
    # Issue #26 item 13: the same continuation as an uninterrupted run (the
    # same data order and augmentation in epoch 2 from the seed alone)
    whole = cifar10.main(SMALL + ["--epochs", "3", "--output-dir",
                                  str(tmp_path / "whole")])
    assert summary["test_loss"] == pytest.approx(whole["test_loss"],
                                                 rel=1e-5, abs=1e-6)
    with open(os.path.join(out, "log.csv")) as f:
        resumed_log = list(csv.DictReader(f))
    with open(tmp_path / "whole" / "log.csv") as f:
        whole_log = list(csv.DictReader(f))
    for resumed_row, whole_row in zip(resumed_log, whole_log):
        assert float(resumed_row["loss"]) == pytest.approx(
            float(whole_row["loss"]), rel=1e-5)


def test_a_backup_of_the_last_epoch_finishes_the_run(tmp_path):
    """A run that ended after its last epoch's backup, before fit did,
    trains no more when started again: it evaluates and writes its
    summary."""
    out = str(tmp_path / "run")
    args = SMALL + ["--epochs", "1", "--output-dir", out]
    with pytest.raises(_Interrupt):
        cifar10.main(args, extra_callbacks=[_KillAfterEpoch(0)])
    summary = cifar10.main(args)
    assert summary["steps"] == 2 and _epochs_logged(out) == [0]
    assert os.path.exists(os.path.join(out, "summary.json"))
    assert not os.path.exists(os.path.join(out, "backup"))


def _closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_first_run_fails_fast_with_what_to_do(tmp_path):
    # Downloading is the default; here the way out (an HTTPS proxy on a
    # closed port) does not answer, as on a machine without network.
    import time

    start = time.time()
    result = run_example(
        "cifar10", ["--data-dir", str(tmp_path / "empty"), "--epochs", "1"],
        env={"https_proxy": f"http://127.0.0.1:{_closed_port()}"},
        timeout=300)
    assert time.time() - start < 30
    assert result.returncode == 2
    assert "cannot be downloaded" in result.stderr
    assert "--mock-data" in result.stderr and "--data-dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_download_fails_at_once(tmp_path):
    result = run_example("cifar10", ["--data-dir", str(tmp_path / "empty"),
                                      "--no-download"], timeout=300)
    assert result.returncode == 2
    assert "--no-download" in result.stderr
    assert "--mock-data" in result.stderr and "--data-dir" in result.stderr
    assert "that directory does not exist" in result.stderr


def test_download_server_probe_gives_up_in_bounded_time(monkeypatch):
    import socket
    import time

    def hangs(address, timeout=None):
        time.sleep(60)  # a connection (or name lookup) that never answers

    monkeypatch.setattr(socket, "create_connection", hangs)
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    start = time.time()
    answer = cifar.download_server_answers("cifar10", timeout=1.0)
    assert answer == "proxy.example:3128"
    assert time.time() - start < 5
    # a proxy setting that cannot be read is left to tfds, not judged
    monkeypatch.setenv("https_proxy", "http://proxy.example:99999")
    assert cifar.download_server_answers("cifar10", timeout=1.0) is True


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
    assert "not available on the torch backend" in result.stderr
    assert "KERAS_BACKEND=jax or tensorflow" in result.stderr


def test_says_where_it_computes_and_warns_of_an_unused_gpu(
        tmp_path, monkeypatch, capsys):
    import keras_quadratic as kq

    monkeypatch.setattr(kq.devices, "nvidia_gpu_present", lambda: True)
    summary = cifar10.main(SMALL + ["--epochs", "1", "--output-dir",
                                    str(tmp_path)])
    out = capsys.readouterr().out
    backend = keras.backend.backend()
    assert f"Keras backend {backend}, computing on cpu" in out
    assert kq.devices.GPU_INSTALL[backend] in out
    # said before training starts
    assert out.index("computing on cpu") < out.index("steps/epoch")
    assert summary["accelerator"] == "cpu"


def test_require_gpu_is_an_error_on_the_cpu(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cifar10.main(SMALL + ["--require-gpu", "--output-dir",
                              str(tmp_path)])
    assert exit_info.value.code == 2
    assert "computes on the CPU" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(tmp_path, "log.csv"))


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "1e10", "soon"])
def test_distribute_timeout_must_be_finite_seconds(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cifar.parse_args(["--distribute-timeout", value])
    assert exit_info.value.code == 2
    assert ("--distribute-timeout: expected a number of seconds > 0 and at "
            "most 604800" in capsys.readouterr().err)
    assert cifar.parse_args(["--distribute-timeout", "2.5"]
                              ).distribute_timeout == 2.5


def test_distribute_timeout_needs_distribute(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cifar10.main(SMALL + ["--distribute-timeout", "5", "--output-dir",
                              str(tmp_path)])
    assert exit_info.value.code == 2
    assert ("--distribute-timeout is for --distribute alone"
            in capsys.readouterr().err)
    assert not os.listdir(tmp_path)


def test_an_epoch_is_a_multiple_of_steps_per_execution(capsys):
    """Otherwise Keras's calls would take batches of the next epoch (and a
    resumed run would start elsewhere than the uninterrupted one): the
    last batches of each epoch are left out."""
    import numpy as np
    import tensorflow as tf

    examples = cifar.in_memory(tf.data.Dataset.from_tensor_slices(
        (np.zeros((28, 32, 32, 3), "uint8"), np.arange(28))))
    assert cifar.steps_per_epoch(examples, 4, 7) == 7
    assert cifar.steps_per_epoch(examples, 4, 2) == 6

    def labels(initial_epoch):
        return [y for _, y in cifar.training_pipeline(
            examples, 4, "channels_last", 0, 2, initial_epoch,
            steps_per_execution=2).as_numpy_iterator()]

    run, resumed = labels(0), labels(1)
    assert len(run) == 12 and len(resumed) == 6
    for y, resumed_y in zip(run[6:], resumed):  # epoch 1 at batch 6
        np.testing.assert_array_equal(y, resumed_y)
    with pytest.raises(SystemExit) as exit_:
        cifar.steps_per_epoch(examples, 4, 8)
    assert exit_.value.code == 2
    assert ("--steps-per-execution 8 is more than the 7 steps of an epoch"
            in capsys.readouterr().err)


def test_steps_per_execution_and_jit_compile(tmp_path, capsys):
    args = SMALL + ["--epochs", "1", "--steps-per-execution", "2",
                    "--jit-compile", "false", "--output-dir", str(tmp_path)]
    if keras.backend.backend() == "torch":
        with pytest.raises(SystemExit):
            cifar10.main(args)
        assert "must be 1 on the torch backend" in capsys.readouterr().err
        return
    summary = cifar10.main(args)
    assert summary["steps"] == 2
    assert summary["args"]["steps_per_execution"] == 2


def test_epoch_callbacks_leave_async_dispatch_on(tmp_path):
    callbacks = cifar.epoch_callbacks(str(tmp_path))
    for callback in callbacks:
        overrides = (type(callback).on_train_batch_end
                     is not keras.callbacks.Callback.on_train_batch_end)
        assert not overrides or callback.async_safe, type(callback).__name__
    assert {type(c).__name__ for c in callbacks} == {
        "BackupAndRestore", "TensorBoard", "ModelCheckpoint"}


def _uint8_dataset(n=20, seed=3):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype="uint8")
    labels = rng.integers(0, 10, (n,)).astype("int64")
    return images, labels, tf.data.Dataset.from_tensor_slices(
        (images, labels))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_test_pipeline_normalizes_as_per_image_reference(data_format):
    import numpy as np

    images, labels, dataset = _uint8_dataset()
    batches = list(cifar.test_pipeline(dataset, 8, data_format))
    assert [len(y) for _, y in batches] == [8, 8, 4]  # nothing dropped
    x = np.concatenate([b.numpy() for b, _ in batches])
    y = np.concatenate([b.numpy() for _, b in batches])
    expected = (images.astype("float64") / 255.0 - np.array(cifar.MEAN)) / (
        np.array(cifar.STD))
    if data_format == "channels_first":
        expected = expected.transpose(0, 3, 1, 2)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y, labels)


def test_augmentation_crops_the_zero_padded_image_and_flips():
    import numpy as np
    import tensorflow as tf

    images, _, _ = _uint8_dataset(n=64)
    images = np.maximum(images, 1)  # so that the padding shows as zeros
    out = cifar.augment_batch(tf.constant(images), [7, 0]).numpy()
    again = cifar.augment_batch(tf.constant(images), [7, 0]).numpy()
    np.testing.assert_array_equal(out, again)  # the seed fixes the draws
    assert not np.array_equal(
        out, cifar.augment_batch(tf.constant(images), [7, 1]).numpy())
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets, flips = set(), 0
    for i in range(len(images)):
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9)
                   for flip in (False, True)
                   if np.array_equal(
                       padded[i, dy:dy + 32, dx:dx + 32][:, ::-1]
                       if flip else padded[i, dy:dy + 32, dx:dx + 32],
                       out[i])]
        assert matches, f"image {i} is not a crop of its padded self"
        offsets.add(matches[0][:2])
        flips += matches[0][2]
    assert len(offsets) > 10  # each image its own offset
    assert 10 < flips < 54


def test_training_epochs_are_seeded_permutations_resumable_at_any_epoch():
    """Issue #26 item 13: each epoch is a permutation of the split (the last
    partial batch dropped) drawn from the seed and the epoch, and so are
    its augmentations: the batches from epoch e on are the same whether
    the pipeline starts at epoch 0 or at e."""
    import numpy as np

    import tensorflow as tf

    images, _, _ = _uint8_dataset(n=20)
    # each example named by its label
    examples = cifar.in_memory(tf.data.Dataset.from_tensor_slices(
        (images, np.arange(20))))
    assert cifar.steps_per_epoch(examples, 8) == 2

    def batches(seed, epochs, initial_epoch=0):
        return [(x, y) for x, y in cifar.training_pipeline(
            examples, 8, "channels_last", seed, epochs,
            initial_epoch).as_numpy_iterator()]

    run = batches(0, 3)
    assert [len(y) for _, y in run] == [8] * 6
    orders = [np.concatenate([y for _, y in run[2 * e:2 * e + 2]])
              for e in range(3)]
    for order in orders:  # 16 distinct examples of the 20
        assert len(set(order)) == 16
    assert len({tuple(order) for order in orders}) == 3  # reshuffled
    resumed = batches(0, 3, initial_epoch=1)
    assert len(resumed) == 4
    for (x, y), (rx, ry) in zip(run[2:], resumed):
        np.testing.assert_array_equal(ry, y)
        np.testing.assert_array_equal(rx, x)  # the same augmentations
    other = batches(1, 1)
    assert not np.array_equal(other[0][1], run[0][1])
    with pytest.raises(SystemExit):
        cifar.steps_per_epoch(examples, 21)


@pytest.mark.parametrize("style", ["coupled", "decoupled"])
def test_weight_decay_styles(style):
    args = cifar.parse_args(["--depth", "8", "--decay-style", style])
    model = cifar.build_and_compile(args, 10, 10, "channels_last")
    inner = model.optimizer.inner_optimizer
    gate_biases = [w for w in model.weights if w.path.endswith("gate_bias")]
    assert gate_biases and all(w.regularizer is None for w in gate_biases)
    if style == "coupled":  # PyTorch's: an L2 term in the loss
        assert inner.weight_decay is None
        assert len(model.losses) == len(
            [w for w in model.trainable_weights
             if not w.path.split("/")[-1].startswith(("gate_", "square_"))])
    else:
        assert not model.losses
        assert inner.weight_decay == pytest.approx(1e-4)


def test_a_backup_resumes_only_under_its_momentum_rule(tmp_path, capsys):
    out = str(tmp_path)
    cifar.check_momentum_rule(out, "pytorch", record=True)  # no backup
    os.makedirs(os.path.join(out, "backup"))
    cifar.check_momentum_rule(out, "pytorch", record=False)
    with pytest.raises(SystemExit) as exit_:
        cifar.check_momentum_rule(out, "keras", record=True)
    assert exit_.value.code == 2
    assert "backup of a run trained with --sgd pytorch" in (
        capsys.readouterr().err)
    # a backup from before --sgd existed was Keras's SGD's
    os.remove(os.path.join(out, "momentum_rule.json"))
    cifar.check_momentum_rule(out, "keras", record=False)
    with pytest.raises(SystemExit):
        cifar.check_momentum_rule(out, "pytorch", record=False)
    assert "before --sgd existed" in capsys.readouterr().err
    # a record that cannot be read: a clear error, not a traceback
    for bad in ("", '["pytorch"]', '{"rule": "pytorch"}'):
        with open(os.path.join(out, "momentum_rule.json"), "w") as f:
            f.write(bad)
        with pytest.raises(SystemExit) as exit_:
            cifar.check_momentum_rule(out, "pytorch", record=True)
        assert exit_.value.code == 2
        assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("rule", ["pytorch", "keras", None])
def test_momentum_rule(rule):
    flags = ["--depth", "8"] + (["--sgd", rule] if rule else [])
    args = cifar.parse_args(flags)
    model = cifar.build_and_compile(args, 10, 10, "channels_last")
    inner = model.optimizer.inner_optimizer
    assert isinstance(inner, keras.optimizers.SGD) and inner.momentum == 0.9
    # the original's, PyTorch's, by default
    assert isinstance(inner, kq.optimizers.PyTorchSGD) == (rule != "keras")


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs 0: must be an integer >= 1"),
    (["--batch-size", "-3"], "--batch-size -3: must be an integer >= 1"),
    (["--depth", "21"], "--depth 21: a QResNet's depth is 6n+2"),
    (["--output-dir", "FILE"], "is a file; name a directory"),
])
def test_bad_flags_exit_2_naming_the_flag(flags, message, tmp_path, capsys):
    """Issue #26 item 11: one `error:` line, exit code 2, at parse time."""
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    flags = [str(a_file) if f == "FILE" else f for f in flags]
    with pytest.raises(SystemExit) as exit_:
        cifar.parse_args(flags)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


def test_a_bogus_backend_is_one_line(tmp_path):
    import subprocess
    import sys

    from examples_util import ROOT

    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "cifar10.py")],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, KERAS_BACKEND="bogus"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: KERAS_BACKEND='bogus': this example runs on tensorflow, jax "
        "or torch.")


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        cifar.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "The defaults are the original recipe" in out
    for default in ("(default: 200)", "(default: 128)", "(default: 0.1)",
                    "(default: quadratic)", "(default: runs/cifar10)"):
        assert default in out, default


def test_curves_readable_with_one_epoch_and_with_a_blow_up(tmp_path):
    """Issue #26 item 17: a marker per epoch, the loss on a log scale, and
    non-finite values shown as such."""
    one = tmp_path / "one.csv"
    one.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n"
                   "0,0.3,2.1,0.35,1.9\n")
    fig = cifar.plot_curves(str(one), str(tmp_path / "one.png"))
    loss, accuracy = fig.axes
    assert all(line.get_marker() == "o" for line in loss.lines)
    assert len(loss.lines) == 2 and loss.get_yscale() == "log"
    blown = tmp_path / "blown.csv"
    blown.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n"
                     "0,0.3,2.1,0.35,1.9\n1,0.1,1e16,0.1,nan\n"
                     "2,0.1,nan,0.1,inf\n")
    fig = cifar.plot_curves(str(blown), str(tmp_path / "blown.png"))
    loss = fig.axes[0]
    assert loss.get_yscale() == "log"
    labels = loss.get_legend_handles_labels()[1]
    assert "train: NaN or infinite" in labels
    assert "test: NaN or infinite" in labels
    assert (tmp_path / "blown.png").stat().st_size > 0


def test_a_damaged_backup_is_named_with_the_way_out(tmp_path, capsys):
    """Issue #26 item 12: at once, the file named, exit code 2."""
    import h5py

    out = str(tmp_path)
    backup = tmp_path / "backup"
    assert cifar.check_backup(out) == (0, None)
    backup.mkdir()
    metadata, weights = (backup / "training_metadata.json",
                         backup / "latest.weights.h5")
    metadata.write_text('{"epoch": 2, "batch": 0}')
    epoch, line = cifar.check_backup(out)
    assert epoch == 2 and line.startswith("resuming after epoch 2")
    for damaged, content in ((metadata, ""), (weights, "not hdf5")):
        damaged.write_text(content)
        with pytest.raises(SystemExit) as exit_:
            cifar.check_backup(out)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert str(damaged) in err and f"delete {backup}" in err, err
        metadata.write_text('{"epoch": 2, "batch": 0}')
    # Keras falls back to the previous weights when they are intact, and to
    # the previous metadata (without it, to epoch 0)
    with h5py.File(str(weights) + ".bkp", "w"):
        pass
    epoch, line = cifar.check_backup(out)
    assert epoch == 0 and line.startswith("restarting at epoch 0")
    (backup / "training_metadata.json.bkp").write_text('{"epoch": 1}')
    epoch, line = cifar.check_backup(out)
    assert epoch == 1 and line.startswith("resuming after epoch 1")


def test_a_sigint_swallowed_by_a_destructor_still_stops_the_run():
    """Python prints and ignores an exception raised in `__del__` (where
    TensorFlow's functions may be when the signal comes): the callback
    raises the interrupt again at the end of the next batch."""
    import gc
    import signal

    callback = cifar.stop_on_sigint()
    callback.on_train_batch_end(0)  # no signal yet: nothing

    class SignalledWhileDestroyed:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes
                pass

    try:
        SignalledWhileDestroyed()
        gc.collect()
        with pytest.raises(KeyboardInterrupt):
            callback.on_train_batch_end(1)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_sigint_stops_a_run_and_leaves_the_backup(tmp_path):
    """Issue #26 item 10: SIGINT to the process group stops the run within
    seconds, also where it was started with SIGINT ignored (the background
    of a script), with exit code 130, what to do, and the backup."""
    import signal
    import subprocess
    import sys
    import time

    from examples_util import ROOT

    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "examples", "cifar10.py"),
         *SMALL, "--epochs", "50", "--output-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.time() + 300
        while not (out / "backup" / "training_metadata.json").exists():
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err[-2000:]
    assert "interrupted: run the same command again to resume" in err
    assert (out / "backup" / "training_metadata.json").exists()
    # Issue #26 item 15: TensorFlow's start-up lines (absl's, oneDNN's)
    # once each at most, on any backend
    startup = [line.split("] ", 1)[-1] for line in err.splitlines()
               if "absl::InitializeLog" in line or "oneDNN" in line]
    assert len(startup) == len(set(startup)), startup
