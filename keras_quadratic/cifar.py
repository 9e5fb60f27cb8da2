"""The CIFAR-10/100 training harness of QResNet with ReLinear: what
`examples/cifar10.py`, `examples/finetune.py` and the benchmarks share.

- The recipe's flags (`parse_args`, `add_data_args`), the original's by
  default: SGD with momentum 0.9 as PyTorch computes it, PyTorch-style
  weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 50% and 75% of the
  epochs.
- Data: `load_splits` (tensorflow-datasets, with an offline machine told
  what to do within seconds), `training_pipeline` (tf.data over the uint8
  images in memory: each epoch's order and the original's augmentation,
  on whole batches, drawn from the seed and the epoch, so that a resumed
  run goes on as an uninterrupted one), `test_pipeline`; both normalize
  per channel.
- The model and optimizer (`build_and_compile`, `learning_rate_schedule`),
  callbacks, resuming (`check_momentum_rule`, `process_output_dir`) and
  curves (`plot_curves`).

It is the scripts' harness, not library API (`import keras_quadratic`
does not load it): errors a user can fix end the process with exit code 2
and one line (`fail`), as bad flags do. Importing it loads Keras and its
configured backend, as any module of the package does; TensorFlow and
tensorflow-datasets only where a function needs them (the tf.data
pipeline), so the npz paths run where only JAX or torch is installed.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

from keras_quadratic.models.qresnet import CIFAR10_MEAN as MEAN
from keras_quadratic.models.qresnet import CIFAR10_STD as STD

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
# Where tfds downloads these datasets from (its builders' URLs): probed
# before a download, so that an offline machine gets a clear error in
# seconds rather than tfds's retries.
DOWNLOAD_HOSTS = {"cifar10": "www.cs.toronto.edu",
                  "cifar100": "www.cs.toronto.edu"}


def add_data_args(p):
    """The data flags, shared with the other examples."""
    p.add_argument("--dataset", choices=sorted(NUM_CLASSES), default="cifar10",
                   help="the tfds dataset")
    p.add_argument("--data-dir", default=None,
                   help="tfds data dir holding the prepared dataset")
    p.add_argument("--download", action=argparse.BooleanOptionalAction,
                   default=True,
                   help="download and prepare the dataset with tfds on first "
                   "use, into --data-dir or tfds's default data dir; "
                   "--no-download: fail instead")
    p.add_argument("--train-split", default="train",
                   help="tfds split to train on (e.g. train[:10%%])")
    p.add_argument("--test-split", default="test",
                   help="tfds split to test on after each epoch")
    p.add_argument("--mock-data", action="store_true",
                   help="random images from tfds.testing.mock_data")
    p.add_argument("--mock-examples", type=int, default=256,
                   help="examples per split with --mock-data")
    p.add_argument("--batch-size", type=int, default=128,
                   help="the global batch (>= 1)")
    p.add_argument("--seed", type=int, default=0,
                   help="weights, data order and augmentation")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="Keras's progress output: 0 none, 1 a bar, 2 a "
                   "line per epoch")


SCALING_OUT = """\
Scaling out (--distribute): data parallel over every device of every
process, on Keras's engines, configured by their standard variables only.
--batch-size is the global batch, split over all devices; the learning-rate
recipe is unchanged; process 0 alone writes the output directory (resuming
reads its backup, so on several hosts put --output-dir on a shared file
system). Prepare the dataset before starting several processes. A process
whose peers do not all join within --distribute-timeout ends with exit code
1; inconsistent variables, and on JAX a coordinator that never answers a
process other than 0, end it with exit code 2 and a message.

  JAX, 2 processes on one machine (CPUs; on GPUs give each process its
  own, CUDA_VISIBLE_DEVICES=0 and =1):
    export KERAS_BACKEND=jax KERAS_DISTRIBUTION_NUM_PROCESSES=2
    export KERAS_DISTRIBUTION_JOB_ADDRESSES=localhost:12345
    KERAS_DISTRIBUTION_PROCESS_ID=0 python examples/cifar10.py --distribute &
    KERAS_DISTRIBUTION_PROCESS_ID=1 python examples/cifar10.py --distribute
  JAX, N hosts: the same on each host, with N processes, process ids 0 to
    N-1 and JOB_ADDRESSES=host0:port (process 0's host).
  TensorFlow (MultiWorkerMirroredStrategy), one TF_CONFIG per process:
    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}'  (index 1 on host1)
  torch: not yet (Keras 3.15 has no torch distribution; a later Keras that
    has one is used automatically).
"""


def seconds(text):
    """argparse type: seconds, as `kq.distribute.data_parallel` accepts
    them (its own check)."""
    from keras_quadratic.distribute import check_timeout

    try:
        value = float(text)
    except ValueError:
        value = text
    try:
        return check_timeout(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            str(error).removeprefix("timeout: ").split(" Received:")[0]
            + f", not {text!r}") from None


def parse_args(argv=None):
    """The example's flags (`examples/cifar10.py --help`), with the
    original recipe as defaults, parsed from `argv`."""
    p = argparse.ArgumentParser(
        description="Train a quadratic ResNet on CIFAR-10 (or CIFAR-100) "
        "with ReLinear. The defaults are the original recipe (QResNet20, "
        "SGD with momentum 0.9 as PyTorch computes it, weight decay 1e-4, "
        "batch 128, lr 0.1 divided by 10 at 50% and 75% of 200 epochs).",
        epilog=SCALING_OUT, formatter_class=HelpFormatter)
    add_data_args(p)
    p.add_argument("--depth", type=int, default=20,
                   help="the QResNet's depth, 6n+2 (20, 32, 44, 56, 110)")
    p.add_argument("--neuron", choices=("quadratic", "compact", "linear"),
                   default="quadratic",
                   help="quadratic: (w_r x + b_r)(w_g x + b_g) + w_b x^2 + "
                   "c; compact: w_r x + b_r + w_b x^2; linear: a ResNet")
    p.add_argument("--rezero", action="store_true",
                   help="ReZero residual blocks (a learned scale on each "
                   "branch, 0 at the start)")
    p.add_argument("--shortcut", choices=("A", "projection"), default="A",
                   help="A: the original's zero-padded identity; "
                   "projection: a 1x1 convolution where the shape changes")
    p.add_argument("--epochs", type=int, default=200,
                   help="training epochs (>= 1)")
    p.add_argument("--learning-rate", type=float, default=0.1,
                   help="the peak learning rate")
    p.add_argument("--lr-schedule", choices=("step", "cosine"),
                   default="step",
                   help="step (the original): the learning rate /10 at 50%% "
                   "and 75%% of the epochs; cosine: a linear warm-up from "
                   "lr/10 to lr over --warmup-epochs, then a cosine decay "
                   "to 0 (steadier in short runs)")
    p.add_argument("--warmup-epochs", type=float, default=1.0,
                   help="with --lr-schedule cosine")
    p.add_argument("--momentum", type=float, default=0.9,
                   help="SGD momentum")
    p.add_argument("--sgd", choices=("pytorch", "keras"), default="pytorch",
                   help="the momentum rule. pytorch (default): "
                   "torch.optim.SGD's, as in the original (b = m b + g; "
                   "w -= lr b: each step's rate applied to the whole "
                   "buffer; kq.optimizers.PyTorchSGD); keras: "
                   "keras.optimizers.SGD's (v = m v - lr g; w += v). The "
                   "two take the same steps at a constant rate; when it "
                   "changes (warm-up, cosine decay, the step schedule's "
                   "drops) Keras's follow it about 1 / (1 - momentum) "
                   "steps late. A run resumes only under the rule it "
                   "started with")
    p.add_argument("--weight-decay", type=float, default=1e-4,
                   help="weight decay of the conventional weights (kernels, "
                   "biases, batch-norm scales and offsets); the quadratic "
                   "weights have the ReLinear regularizer instead")
    p.add_argument("--decay-style", choices=("coupled", "decoupled"),
                   default="coupled",
                   help="coupled (default): PyTorch's SGD weight decay, as "
                   "in the original, wd * w added to the gradient before "
                   "momentum (an L2 penalty wd/2 * sum(w^2)); decoupled: "
                   "Keras's weight_decay, w -= lr * wd * w (about 10x "
                   "weaker at momentum 0.9)")
    p.add_argument("--gamma-g", type=float, default=1e-2,
                   help="ReLinear step factor of the gate weights")
    p.add_argument("--gamma-b", type=float, default=1e-2,
                   help="ReLinear step factor of the square weights")
    p.add_argument("--no-relinear", action="store_true",
                   help="plain training of every weight (gammas = 1)")
    for group in ("gate", "square"):
        for norm in ("l1", "l2"):
            p.add_argument(f"--{group}-{norm}", type=float, default=0.0,
                           help=f"ReLinear regularizer {group}_{norm}")
    p.add_argument("--mixed-precision", choices=("bf16", "fp16"), default=None,
                   help="Keras mixed precision; bf16 is the one to use on "
                   "recent GPUs (fp16 adds loss scaling)")
    p.add_argument("--distribute", action="store_true",
                   help="data parallel over every device of every process "
                   "(see 'Scaling out' below)")
    p.add_argument("--distribute-timeout", type=seconds, default=None,
                   help="with --distribute: seconds (default 120) to wait "
                   "for the other processes to start before ending (exit "
                   "code 1; on JAX a process other than 0 waits first for "
                   "the coordinator to answer, up to as long again)")
    p.add_argument("--steps-per-execution", type=int, default=1,
                   help="training steps per compiled call (fewer host "
                   "round trips; JAX and TensorFlow only); an epoch's steps "
                   "are rounded down to a multiple of it")
    p.add_argument("--jit-compile", choices=("auto", "true", "false"),
                   default="auto",
                   help="compile the training step: XLA on TensorFlow (auto: "
                   "on GPUs only), torch.compile on torch (auto: off), jax.jit "
                   "on JAX (auto: on)")
    p.add_argument("--cuda-graph", choices=("auto", "on", "off"),
                   default="auto",
                   help="torch only: replay each training step as one CUDA "
                   "graph (kq.callbacks.CUDAGraphTrainStep; auto: on a CUDA "
                   "GPU unless --jit-compile true)")
    p.add_argument("--require-gpu", action="store_true",
                   help="exit with an error when the backend computes on "
                   "the CPU")
    p.add_argument("--output-dir", default="runs/cifar10",
                   help="where the logs, checkpoints, backup (for resuming) "
                   "and plots go; the same directory again resumes")
    args = p.parse_args(argv)
    check_args(args)
    return args


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the epilog's layout and shows every default."""


def check_args(args):
    """Flags whose values argparse's types cannot judge: an `error:` line
    naming the flag and exit code 2, before any data or model is made."""
    for flag, minimum in (("epochs", 1), ("batch_size", 1),
                          ("mock_examples", 1)):
        value = getattr(args, flag, None)
        if value is not None and value < minimum:
            fail(f"--{flag.replace('_', '-')} {value}: must be an integer "
                 f">= {minimum}.")
    depth = getattr(args, "depth", None)
    if depth is not None and (depth < 8 or (depth - 2) % 6):
        fail(f"--depth {depth}: a QResNet's depth is 6n+2 with n >= 1 "
             "(8, 14, 20, 32, 44, 56, 110).")
    output = getattr(args, "output_dir", None)
    if output is not None and os.path.exists(output) and not os.path.isdir(
            output):
        fail(f"--output-dir {output}: is a file; name a directory (new or "
             "one to resume from).")


def fail(message):
    """Ends the process as a bad flag does: `error: message` on stderr,
    exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def download_server_answers(dataset, timeout=8.0):
    """True if the first hop of tfds's download of `dataset` (the proxy
    that `requests`, which tfds downloads with, would use, else the
    dataset's server) accepts a TCP connection within `timeout` seconds per
    address (20 s at most in all); else "host:port", for the error message.
    A proxy setting it cannot read is not judged: True."""
    import socket
    import threading
    import urllib.parse

    import requests

    host, port = DOWNLOAD_HOSTS[dataset], 443
    proxies = requests.utils.get_environ_proxies(f"https://{host}/")
    proxy = proxies.get("https") or proxies.get("all")
    if proxy:
        try:
            parsed = urllib.parse.urlsplit(
                proxy if "://" in proxy else f"http://{proxy}")
            host = parsed.hostname
            port = parsed.port or {"https": 443}.get(
                parsed.scheme, 1080 if parsed.scheme.startswith("socks")
                else 80)
        except ValueError:
            return True
        if not host:
            return True
    answered = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    # In a thread: name resolution has no timeout of its own.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(min(2.5 * timeout, 20.0))
    return True if answered else (
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def _archive_downloaded(builder):
    """Whether tfds already holds the dataset's archive (an interrupted
    preparation, or one copied there): then it prepares without network."""
    downloads = os.path.join(os.path.dirname(os.path.dirname(
        builder.data_dir)), "downloads")
    try:
        return any(builder.name.replace("cifar", "cifar-") in name
                   or builder.name in name for name in os.listdir(downloads))
    except OSError:
        return False


def load_splits(args, no_download_reason=None):
    """The train and test splits as tf.data datasets of (uint8 image, label),
    and the number of training examples. A dataset that is not prepared is
    downloaded if `args.download` and no `no_download_reason` (the end of
    the error message otherwise) is given."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        fail(f"the data pipeline needs TensorFlow and tensorflow-datasets "
             f"({error}). Install a CPU TensorFlow with the examples: pip "
             f"install \".[tensorflow,examples]\" (or .[tensorflow-cuda,"
             f"examples] for the tensorflow backend on a GPU).")

    if args.mock_data:
        with tfds.testing.mock_data(num_examples=args.mock_examples):
            train = tfds.load(args.dataset, split=args.train_split,
                              as_supervised=True)
            test = tfds.load(args.dataset, split=args.test_split,
                             as_supervised=True)
        return train, test, args.mock_examples
    builder = tfds.builder(args.dataset, data_dir=args.data_dir)
    if not builder.is_prepared():
        where = (builder.data_dir if args.data_dir
                 else "the default tfds data dir")
        if args.data_dir and not os.path.isdir(args.data_dir):
            where = (f"--data-dir {args.data_dir} (that directory does not "
                     "exist)")
        alternatives = ("Pass --data-dir DIR with a tfds data dir where it is "
                        "prepared, or --mock-data to run on random images.")
        if no_download_reason or not args.download:
            reason = no_download_reason or "--no-download was given"
            fail(f"the tfds dataset '{args.dataset}' is not prepared in "
                 f"{where} and {reason}. {alternatives}")
        server = (True if _archive_downloaded(builder)
                  else download_server_answers(args.dataset))
        if server is not True:
            fail(f"the tfds dataset '{args.dataset}' is not prepared in "
                 f"{where}, and it cannot be downloaded: {server} did not "
                 f"answer (offline?). {alternatives}")
        print(f"Downloading and preparing '{args.dataset}' with tfds (once; "
              f"about 170 MB) into {builder.data_dir}", flush=True)
        try:
            builder.download_and_prepare()
        except Exception as error:  # network or disk: say it plainly
            fail(f"could not download '{args.dataset}' ({error}). "
                 f"{alternatives}")
    try:
        train = builder.as_dataset(split=args.train_split, as_supervised=True)
        test = builder.as_dataset(split=args.test_split, as_supervised=True)
        size = builder.info.splits[args.train_split].num_examples
    except Exception as error:
        fail(f"bad split: {error}")
    return train, test, size


def pad_to_whole_batches(dataset, batch_size):
    """(image, label) -> (image, label, weight 1), then black images of
    weight 0 up to a multiple of `batch_size`: the accuracy (a weighted
    mean) is the dataset's own, and every batch splits evenly over the
    processes. The loss averages over the padded batches."""
    import tensorflow as tf

    size = int(dataset.cardinality())
    if size < 0:
        size = sum(1 for _ in dataset)
    dataset = dataset.map(lambda image, label: (image, label, 1.0))
    missing = -size % batch_size
    if missing:
        image, label, _ = dataset.element_spec
        pad = (tf.zeros(image.shape, image.dtype),
               tf.zeros(label.shape, label.dtype), 0.0)
        dataset = dataset.concatenate(
            tf.data.Dataset.from_tensors(pad).repeat(missing))
    return dataset


def split_each_batch(dataset):
    """Under TensorFlow's multi-worker strategy, every worker reads the
    whole dataset and takes its part of each global batch (as Keras shards
    for JAX), rather than reading some of the files: the workers see the
    same number of batches, in the same global order."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


def in_memory(dataset):
    """A split of (uint8 image, label) pairs as two tensors (CIFAR-10's
    50,000 training images take 150 MB): what `training_pipeline` shuffles
    by index."""
    import tensorflow as tf

    size = int(dataset.cardinality())
    if size < 0:
        size = sum(1 for _ in dataset)
    if size == 0:
        fail("the training split is empty.")
    images, labels = dataset.batch(size).get_single_element()
    return tf.convert_to_tensor(images), tf.convert_to_tensor(labels)


def steps_per_epoch(examples, batch_size, steps_per_execution=1):
    """The whole batches of `batch_size` in `in_memory`'s examples: an
    epoch of `training_pipeline`, rounded down to a multiple of
    `steps_per_execution` (Keras takes that many batches per call:
    otherwise an epoch would take batches of the next, and a resumed run
    would start elsewhere than the uninterrupted one)."""
    size = int(examples[0].shape[0])
    if size < batch_size:
        fail(f"--batch-size {batch_size} is more than the {size} training "
             "examples.")
    steps = size // batch_size
    if steps < steps_per_execution:
        fail(f"--steps-per-execution {steps_per_execution} is more than the "
             f"{steps} steps of an epoch.")
    return steps - steps % steps_per_execution


def training_pipeline(examples, batch_size, data_format, seed, epochs,
                      initial_epoch=0, steps_per_execution=1):
    """tf.data of the training batches of epochs `initial_epoch` to
    `epochs - 1`, one after the other, for `model.fit(...,
    steps_per_epoch=steps_per_epoch(examples, batch_size,
    steps_per_execution))`; `examples` is `in_memory`'s (images, labels).

    Epoch e's order is a permutation of the whole split drawn from
    (`seed`, e) alone, and each batch's random crops (of the image
    zero-padded by 4 pixels) and horizontal flips from (`seed`, its step):
    a run resumed at epoch e (`initial_epoch=e`) sees the batches an
    uninterrupted run sees from epoch e on. The examples past an epoch's
    batches (a partial batch, and the batches past a multiple of
    `steps_per_execution`) sit that epoch out, others each epoch. Then the
    per-channel normalization; prefetched."""
    import tensorflow as tf

    images, labels = examples
    size = int(images.shape[0])
    steps = steps_per_epoch(examples, batch_size, steps_per_execution)
    order_key = tf.constant([seed, 0], tf.int64)
    draws_key = tf.constant([seed, 1], tf.int64)

    @tf.autograph.experimental.do_not_convert  # (no Python control flow)
    def batch_of_step(step):
        epoch = step // steps
        positions = (step % steps) * batch_size + tf.range(
            batch_size, dtype=tf.int64)
        order = tf.random.experimental.index_shuffle(
            positions, tf.random.experimental.stateless_fold_in(
                order_key, epoch), size - 1)
        draws_seed = tf.random.experimental.stateless_fold_in(draws_key, step)
        batch_images = augment_batch(tf.gather(images, order), draws_seed)
        return (normalize_batch(batch_images, data_format),
                tf.gather(labels, order))

    return tf.data.Dataset.range(initial_epoch * steps, epochs * steps).map(
        batch_of_step, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True).prefetch(tf.data.AUTOTUNE)


def test_pipeline(dataset, batch_size, data_format, whole_batches=False):
    """tf.data of the test batches of (uint8 image, label[, weight])
    examples, in their order: cached uint8 images (a quarter of float32's
    bytes), batched, normalized per channel, prefetched. `whole_batches`
    drops a last partial batch (a static batch size, what Keras's sharding
    over processes reads)."""
    import tensorflow as tf

    def prepare(images, labels, *weights):
        return (normalize_batch(images, data_format), labels, *weights)

    return dataset.cache().batch(
        batch_size, drop_remainder=whole_batches).map(
        prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)


def augmentation_draws(batch, seed, padding=4):
    """A crop offset (rows, columns) and a horizontal flip for each of
    `batch` images, drawn from the stateless `seed` (shape [2])."""
    import tensorflow as tf

    offsets_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    offsets = tf.random.stateless_uniform(
        (batch, 2), offsets_seed, 0, 2 * padding + 1, dtype=tf.int32)
    return offsets, tf.random.stateless_uniform((batch, 1), flip_seed) < 0.5


def augment_batch(images, seed, padding=4):
    """Random crop of each image after zero padding (black, as the original
    pads the uint8 image) and random horizontal flip, vectorized over a
    batch of channels_last images, drawn from the stateless `seed`."""
    import tensorflow as tf

    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    offsets, flip = augmentation_draws(shape[0], seed, padding)
    padded = tf.pad(images, [[0, 0], [padding, padding],
                             [padding, padding], [0, 0]])
    rows = offsets[:, :1] + tf.range(height)[None]
    columns = offsets[:, 1:] + tf.range(width)[None]
    columns = tf.where(flip, columns[:, ::-1], columns)
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(images, columns, axis=2, batch_dims=1)


def normalize_batch(images, data_format):
    """uint8 images to float32, per-channel mean/std; channels_first on
    request."""
    import tensorflow as tf

    images = (tf.cast(images, tf.float32) / 255.0 - MEAN) / STD
    if data_format == "channels_first":
        images = tf.transpose(images, (0, 3, 1, 2))
    return images


def plot_curves(csv_path, png_path):
    """Loss and accuracy per epoch, train and test, as a PNG (a Figure of
    its own: matplotlib's global backend and pyplot state are untouched),
    and returns the Figure. Each epoch is a marker (one epoch shows as a
    point); the loss is on a log scale (a blow-up to 1e16 and the
    converged losses both readable); a NaN or infinite value is a red x
    at the top of its panel, named in the legend."""
    import csv
    import math

    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        positive = True
        for prefix, label in (("", "train"), ("val_", "test")):
            if prefix + key not in rows[0]:
                continue
            values = [float(r[prefix + key] or "nan") for r in rows]
            finite = [(e, v) for e, v in zip(epochs, values)
                      if math.isfinite(v)]
            positive &= all(v > 0 for _, v in finite)
            if finite:
                ax.plot(*zip(*finite), marker="o", markersize=3,
                        label=label)
            bad = [e for e, v in zip(epochs, values) if not math.isfinite(v)]
            if bad:
                ax.scatter(bad, [1.0] * len(bad), marker="x", color="red",
                           clip_on=False, zorder=3,
                           transform=blended_transform_factory(
                               ax.transData, ax.transAxes),
                           label=f"{label}: NaN or infinite")
        if key == "loss" and positive:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key + (" (log scale)" if ax.get_yscale() == "log"
                             else ""))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(csv_path))))
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return fig


def stop_on_sigint():
    """Ctrl-C (SIGINT) stops a run within a step, also one started in the
    background of a script (where the shell starts it with SIGINT
    ignored): the handler raises KeyboardInterrupt wherever the main
    thread is, and where Python swallows that (in a destructor, as
    TensorFlow's functions have, it prints it and goes on), the returned
    callback raises it again at the end of the next batch. The handler is
    installed from the main thread only."""
    import signal
    import threading

    import keras

    received = threading.Event()

    def handler(signum, frame):
        received.set()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)

    class StopOnSigint(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if received.is_set():
                raise KeyboardInterrupt

        on_test_batch_end = on_train_batch_end

    callback = StopOnSigint()
    callback.async_safe = True  # (reads no model state)
    return callback


def epoch_timer():
    """A Keras callback that records the wall time of each epoch."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def process_output_dir(out, topology):
    """The directory this process writes to: `out` on process 0. The other
    processes save the same models (under a multi-process distribution,
    saving is a step every process takes) into a temporary directory of
    their own, removed at the end, which starts as a copy of process 0's
    backup so that they resume where it does (on several hosts, `out` must
    be on a file system they share). Its name is fixed by the user, `out`
    and the process id, so that a run killed before its cleanup leaves one
    directory, which the next run with the same `out` replaces; only its
    owner can read it."""
    if topology.is_chief:
        os.makedirs(out, exist_ok=True)
        return out
    run = hashlib.sha1(os.path.abspath(out).encode(),
                       usedforsecurity=False).hexdigest()[:12]
    # (Windows has no uid, and a temporary directory per user)
    user = os.getuid() if hasattr(os, "getuid") else "user"
    private = os.path.join(tempfile.gettempdir(), f"keras-quadratic-{user}-"
                           f"{run}-process{topology.process_id}")
    shutil.rmtree(private, ignore_errors=True)
    try:
        os.makedirs(private, mode=0o700)
    except OSError as error:
        fail(f"process {topology.process_id} cannot make its directory "
             f"{private} ({error}): remove it, or set TMPDIR elsewhere.")
    backup = os.path.join(out, "backup")
    if os.path.isdir(backup):
        shutil.copytree(backup, os.path.join(private, "backup"))
    return private


def check_momentum_rule(out, rule, record):
    """Refuses to resume `out`'s backup under another `--sgd` than the one
    it was written under: the two SGDs keep the same variables with other
    meanings (Keras's momentum is -lr times PyTorch's), so the backup
    would load without an error and throw every later step off. A backup
    without the record was written before `--sgd` existed, by Keras's
    SGD. With `record`, notes `rule` for the next run."""
    path = os.path.join(out, "momentum_rule.json")
    saved = None
    if os.path.exists(path):
        try:
            with open(path) as f:
                saved = json.load(f)["sgd"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            fail(f"cannot read {path} ({error!r}): it should hold "
                 '{"sgd": "pytorch"} or {"sgd": "keras"}, the --sgd of the '
                 "run whose backup is there.")
    if os.path.isdir(os.path.join(out, "backup")):
        written = saved or "keras"
        if written != rule:
            by = (f"--sgd {saved}" if saved else
                  "keras.optimizers.SGD (before --sgd existed)")
            fail(f"{out} holds the backup of a run trained with {by}: "
                 f"resume it with --sgd {written} (its momentum cannot go "
                 f"on under --sgd {rule}), remove {out}/backup, or start "
                 "anew in another --output-dir.")
    if record and saved != rule:  # written whole, then renamed: atomic
        os.makedirs(out, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"sgd": rule}, f)
        os.replace(path + ".tmp", path)


def cuda_graph_callbacks(args, backend, device):
    """`[kq.callbacks.CUDAGraphTrainStep()]` where `--cuda-graph` asks for it
    (auto: torch on a CUDA GPU without torch.compile), else `[]`; `on` where
    it cannot apply is an error."""
    import keras_quadratic as kq

    usable = backend == "torch" and device["platform"] == "gpu"
    if args.cuda_graph == "on" and not usable:
        fail(f"--cuda-graph on: CUDA graphs need the torch backend on a "
             f"CUDA GPU (here: {backend} on the {device['platform']}).")
    if args.cuda_graph == "on" and args.jit_compile == "true":
        fail("--cuda-graph on: not with --jit-compile true (torch.compile); "
             "a CUDA graph replaces it.")
    if args.cuda_graph == "off" or not usable or args.jit_compile == "true":
        return []
    return [kq.callbacks.CUDAGraphTrainStep(
        fallback="raise" if args.cuda_graph == "on" else "warn")]


def check_backup(out):
    """Where `out`'s backup (keras.callbacks.BackupAndRestore's, in
    `out/backup`) resumes: (the epoch fit starts at, a line to print), or
    (0, None) when there is none. A
    damaged backup (a truncated weights file with no intact previous copy,
    unreadable metadata) ends the run at once with the file named and the
    way out, rather than a raw error from inside `fit`."""
    import json

    backup = os.path.join(out, "backup")
    metadata = os.path.join(backup, "training_metadata.json")
    weights = os.path.join(backup, "latest.weights.h5")
    way_out = (f"delete {backup} to start over from epoch 0 (the logs and "
               f"checkpoints in {out} stay), or --output-dir another "
               "directory")

    def readable(path):
        import h5py

        try:
            with h5py.File(path, "r"):
                return None
        except OSError as error:
            return error

    note = ""
    if os.path.exists(weights):
        error = readable(weights)
        if error and (not os.path.exists(weights + ".bkp")
                      or readable(weights + ".bkp")):
            fail(f"the backup's weights {weights} are damaged ({error}) and "
                 f"cannot be resumed from: {way_out}.")
        if error:
            # BackupAndRestore then takes the previous copies: the weights'
            # and the metadata's (without it, it starts at epoch 0).
            note = " (its latest weights were damaged: the previous copy)"
            if not os.path.exists(metadata + ".bkp"):
                return 0, ("restarting at epoch 0 from the previous weights "
                           f"of the backup in {backup} (the latest were "
                           "damaged)")
            metadata += ".bkp"
    if not os.path.exists(metadata):
        return 0, None
    try:
        with open(metadata) as f:
            epoch = int(json.load(f)["epoch"])
    except (ValueError, KeyError, TypeError) as error:
        fail(f"the backup's {metadata} is damaged ({type(error).__name__}: "
             f"{error}) and cannot be resumed from: {way_out}.")
    return epoch, (f"resuming after epoch {epoch} from the backup in "
                   f"{backup}{note}")


def epoch_callbacks(out):
    """Backup for resuming, TensorBoard and the best model, all saving at
    the end of each epoch. Their per-batch hooks do not touch the model at
    that frequency (TensorBoard would, to write the graph: that is off), so
    they are marked `async_safe` and leave Keras's asynchronous dispatch on:
    the host does not wait for each step's results."""
    import keras

    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup")),
        keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"),
                                    write_graph=False),
        keras.callbacks.ModelCheckpoint(
            os.path.join(out, "best.keras"), monitor="val_accuracy",
            save_best_only=True),
    ]
    for callback in callbacks:
        callback.async_safe = True
    return callbacks


def learning_rate_schedule(args, steps_per_epoch):
    """The learning rate of each step, a Keras schedule (also what
    benchmarks/parity.py gives the PyTorch reference, step by step):
    `--lr-schedule step`, the original's, divides it by 10 at 50% and 75%
    of the epochs; `cosine` warms up linearly from lr/10 over
    `--warmup-epochs`, then decays along a cosine to 0."""
    import keras

    if args.warmup_epochs < 0:
        fail(f"--warmup-epochs {args.warmup_epochs}: must be >= 0.")
    lr = args.learning_rate
    if args.lr_schedule == "cosine":
        total = args.epochs * steps_per_epoch
        warmup = min(round(args.warmup_epochs * steps_per_epoch), total)
        return keras.optimizers.schedules.CosineDecay(
            lr / 10 if warmup else lr, max(total - warmup, 1), alpha=0.0,
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    # (the schedule keeps a value up to and including its boundary step)
    boundaries = [int(args.epochs * f) * steps_per_epoch - 1
                  for f in (0.5, 0.75)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, [lr, lr / 10, lr / 100])


def build_and_compile(args, steps_per_epoch, num_classes, data_format):
    """The recipe's model, compiled: `kq.models.QResNet` of `args`
    (ReLinear regularizer if any coefficient is set), PyTorch-style weight
    decay (`add_weight_decay`) or Keras's decoupled one, `PyTorchSGD` (or
    Keras's SGD) on `learning_rate_schedule`, wrapped in
    `ReLinearOptimizer` for quadratic neurons."""
    import keras

    import keras_quadratic as kq

    regularizer = None
    coefficients = dict(gate_l1=args.gate_l1, gate_l2=args.gate_l2,
                        square_l1=args.square_l1, square_l2=args.square_l2)
    if any(coefficients.values()) and args.neuron != "linear":
        regularizer = kq.regularizers.ReLinearRegularizer(**coefficients)
    shape = (32, 32, 3) if data_format == "channels_last" else (3, 32, 32)
    model = kq.models.QResNet(
        depth=args.depth, neuron=args.neuron, rezero=args.rezero,
        num_classes=num_classes, input_shape=shape, shortcut=args.shortcut,
        data_format=data_format, relinear_regularizer=regularizer)
    schedule = learning_rate_schedule(args, steps_per_epoch)
    decoupled = args.decay_style == "decoupled"
    if not decoupled:
        kq.regularizers.add_weight_decay(model, args.weight_decay)
    sgd = (kq.optimizers.PyTorchSGD if args.sgd == "pytorch"
           else keras.optimizers.SGD)
    optimizer = sgd(
        schedule, momentum=args.momentum,
        weight_decay=(args.weight_decay or None) if decoupled else None)
    if args.neuron != "linear":
        gammas = (1.0, 1.0) if args.no_relinear else (args.gamma_g,
                                                      args.gamma_b)
        optimizer = kq.optimizers.ReLinearOptimizer(optimizer, *gammas)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # weighted: the test set padded for several processes has examples
        # of weight 0 (pad_to_whole_batches)
        weighted_metrics=["accuracy"],
        auto_scale_loss=args.mixed_precision == "fp16",
        steps_per_execution=args.steps_per_execution,
        jit_compile={"auto": "auto", "true": True, "false": False}[
            args.jit_compile],
    )
    return model
