"""Train a quadratic ResNet on CIFAR-10 (or CIFAR-100) with ReLinear.

    KERAS_BACKEND=jax python examples/cifar10.py

The defaults reproduce the original recipe: QResNet20, ReLinear
initialization, SGD with momentum 0.9 as PyTorch computes it
(`kq.optimizers.PyTorchSGD`) and weight decay 1e-4 as PyTorch applies it
(added to the gradient, through momentum; the quadratic weights are not
decayed), batch 128,
learning rate 0.1 divided by 10 at 50% and 75% of the epochs (epochs 100 and
150 of 200). Runs on the GPU when the backend sees one, on any backend.
The output directory gets a CSV log, TensorBoard logs, the best model
(`best.keras`), `curves.png` and `summary.json`; starting again with the
same output directory resumes from the last completed epoch.
"""

import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
if BACKEND not in ("tensorflow", "jax", "torch"):  # before Keras fails on it
    print(f"error: KERAS_BACKEND={BACKEND!r}: this example runs on "
          "tensorflow, jax or torch.", file=sys.stderr)
    raise SystemExit(2)
# TensorFlow's C++ notices (INFO) stay quiet unless asked for; where it is
# only the input pipeline, without oneDNN's custom operations (for the
# model's computation on the tensorflow backend they are kept: 0.65 s
# against 1.08 s a QResNet20 step at batch 128 on a 2-core AMD EPYC).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
if BACKEND != "tensorflow":
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


# Copies stdin to stderr line by line as it comes, each line once (the
# text after a C++ log line's "] " prefix).
_EACH_LINE_ONCE = """
import signal
import sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # (ends with its input)
seen = set()
for line in sys.stdin.buffer:
    text = line.split(b"] ", 1)[-1]
    if text not in seen:
        seen.add(text)
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
"""


@contextlib.contextmanager
def each_line_once():
    """What the process writes to stderr meanwhile (C++ libraries too),
    each line once: TensorFlow 2.20+ prints its start-up lines (absl's
    notice, oneDNN's) once for each of the two libraries it loads. A child
    process passes the lines on as they come, so that a message before a
    crash still shows."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _EACH_LINE_ONCE],
            stdin=subprocess.PIPE, stderr=saved)
    except (OSError, ValueError):  # no Python to start: as it is
        os.close(saved)
        yield
        return
    os.dup2(child.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        child.stdin.close()
        child.wait()


if BACKEND == "tensorflow":
    with each_line_once():
        importlib.import_module("tensorflow")

from keras_quadratic.cifar import NUM_CLASSES
from keras_quadratic.cifar import build_and_compile
from keras_quadratic.cifar import check_backup
from keras_quadratic.cifar import check_momentum_rule
from keras_quadratic.cifar import cuda_graph_callbacks
from keras_quadratic.cifar import epoch_callbacks
from keras_quadratic.cifar import epoch_timer
from keras_quadratic.cifar import fail
from keras_quadratic.cifar import in_memory
from keras_quadratic.cifar import load_splits
from keras_quadratic.cifar import pad_to_whole_batches
from keras_quadratic.cifar import parse_args
from keras_quadratic.cifar import plot_curves
from keras_quadratic.cifar import process_output_dir
from keras_quadratic.cifar import split_each_batch
from keras_quadratic.cifar import steps_per_epoch
from keras_quadratic.cifar import stop_on_sigint
from keras_quadratic.cifar import test_pipeline
from keras_quadratic.cifar import training_pipeline


def main(argv=None, extra_callbacks=()):
    sigint = stop_on_sigint()  # Ctrl-C stops a run within a step
    args = parse_args(argv)
    import keras

    import keras_quadratic as kq

    backend = keras.backend.backend()
    topology = kq.distribute.Topology(devices=1, processes=1, process_id=0)
    if args.distribute_timeout is not None and not args.distribute:
        fail("--distribute-timeout is for --distribute alone.")
    if args.distribute:
        if args.distribute_timeout is None:
            args.distribute_timeout = 120.0  # (as summary.json says)
        # First: the multi-process runtimes must start before anything
        # computes.
        try:
            topology = kq.distribute.data_parallel(args.distribute_timeout)
        except (ValueError, TimeoutError, RuntimeError) as error:
            fail(f"--distribute: {error}")
    check_momentum_rule(args.output_dir, args.sgd, record=False)  # early
    # no two processes preparing one folder
    no_download_reason = (
        "several processes do not download it (run once with one process "
        "to prepare it)") if topology.processes > 1 else None
    if args.steps_per_execution < 1 or (
            args.steps_per_execution > 1 and backend == "torch"):
        fail(f"--steps-per-execution {args.steps_per_execution}: must be 1 "
             "on the torch backend and a positive integer on the others.")
    try:
        device = kq.devices.check_device(require_gpu=args.require_gpu,
                                         stream=sys.stdout)
    except RuntimeError as error:
        fail(str(error))
    graph_callbacks = cuda_graph_callbacks(args, backend, device)
    kq.devices.hide_gpus_from_tensorflow()
    train, test, _ = load_splits(args, no_download_reason)
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.config.set_dtype_policy(
            {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[
                args.mixed_precision])
    data_format = keras.config.image_data_format()
    devices = topology.devices
    if args.batch_size % devices:
        fail(f"--batch-size {args.batch_size} must be a multiple of the "
             f"{devices} devices used.")
    train = in_memory(train)
    steps = steps_per_epoch(train, args.batch_size, args.steps_per_execution)
    dropped = int(train[0].shape[0]) // args.batch_size - steps
    if topology.processes > 1:
        # Every process splits each global batch with the others, the last
        # one too: padded to a whole batch with examples of weight 0.
        test = pad_to_whole_batches(test, args.batch_size)
    test_ds = test_pipeline(test, args.batch_size, data_format,
                            whole_batches=topology.processes > 1)
    num_classes = NUM_CLASSES[args.dataset]
    with topology.scope():
        model = build_and_compile(args, steps, num_classes,
                                  data_format)

    check_momentum_rule(args.output_dir, args.sgd, topology.is_chief)
    out = process_output_dir(args.output_dir, topology)
    initial_epoch, resuming = check_backup(out)
    if initial_epoch > args.epochs:
        fail(f"--epochs {args.epochs}: the backup in "
             f"{os.path.join(args.output_dir, 'backup')} has completed "
             f"{initial_epoch} epochs already; pass --epochs "
             f"{initial_epoch} or more to go on, or delete the backup to "
             "start over.")
    # The batches from the epoch the backup resumes at: each epoch's order
    # and augmentation follow from the seed and the epoch alone, so a
    # resumed run goes on as the uninterrupted one would have. (A backup of
    # the last epoch, left by a run that ended before fit did, trains no
    # more: fit still reads a first batch.)
    train_ds = training_pipeline(
        train, args.batch_size, data_format, args.seed, args.epochs,
        min(initial_epoch, args.epochs - 1), args.steps_per_execution)
    if topology.processes > 1:
        train_ds, test_ds = split_each_batch(train_ds), split_each_batch(
            test_ds)
    if topology.is_chief:
        print(f"outputs: {os.path.abspath(args.output_dir)}"
              + (f"; {resuming}" if resuming else ""), flush=True)
    try:
        csv_path = os.path.join(out, "log.csv")
        timer = epoch_timer()
        callbacks = [
            *epoch_callbacks(out),
            keras.callbacks.CSVLogger(csv_path, append=True),
            timer,
            *graph_callbacks,
            sigint,
            *extra_callbacks,
        ]
        print(f"{model.name}: {model.count_params():,} parameters, backend "
              f"{backend}, {devices} device(s) in {topology.processes} "
              f"process(es), {steps} steps/epoch"
              + (f" (the last {dropped} batch(es) of each epoch left out: "
                 "--steps-per-execution must divide it)" if dropped else ""))
        try:
            model.fit(train_ds, validation_data=test_ds, epochs=args.epochs,
                      steps_per_epoch=steps, callbacks=callbacks,
                      verbose=args.verbose if topology.is_chief else 0,
                      shuffle=False)  # the pipeline shuffles
        except KeyboardInterrupt:
            print(f"\ninterrupted: run the same command again to resume "
                  f"from the last completed epoch (the backup in "
                  f"{os.path.join(out, 'backup')})", file=sys.stderr,
                  flush=True)
            raise SystemExit(130) from None
        test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)
        summary = {
            "model": model.name,
            "dataset": "mock" if args.mock_data else args.dataset,
            "test_accuracy": float(test_accuracy),
            "test_loss": float(test_loss),
            "params": int(model.count_params()),
            "trainable_params": int(sum(
                keras.ops.size(w) for w in model.trainable_weights)),
            "epochs": args.epochs,
            "steps": int(keras.ops.convert_to_numpy(
                model.optimizer.iterations)),
            "backend": backend,
            "devices": devices,
            "processes": topology.processes,
            "accelerator": device["platform"],
            "device_name": device["name"],
            "seconds_per_epoch": (sum(timer.seconds) / len(timer.seconds)
                                  if timer.seconds else None),
            "mixed_precision": args.mixed_precision,
            "args": vars(args),
        }
        if topology.is_chief:
            plot_curves(csv_path, os.path.join(out, "curves.png"))
            with open(os.path.join(out, "summary.json"), "w") as f:
                json.dump(summary, f, indent=2)
    finally:
        if not topology.is_chief:  # its temporary directory, also on failure
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({k: summary[k] for k in (
        "test_accuracy", "params", "epochs", "backend", "devices",
        "processes", "seconds_per_epoch")}))
    return summary


if __name__ == "__main__":
    main()
