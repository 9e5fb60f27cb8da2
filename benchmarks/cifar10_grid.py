"""Trains a grid of QResNet / ResNet runs on CIFAR-10 back to back, from
uint8 arrays in memory (no TensorFlow needed), and writes the results:
final-epoch test accuracy and wall time of each run, the test accuracy
after every epoch, and the weights.

    KERAS_BACKEND=jax python benchmarks/cifar10_grid.py --data cifar10.npz \\
        --output runs/cifar10.json --weights-dir runs/grid-weights

One recipe for every run (the defaults: batch 500, bf16 mixed precision,
30 epochs, SGD as PyTorch's, momentum 0.9, lr 0.2 after a 2-epoch linear
warm-up from 0.02, then a cosine decay to 0, PyTorch-style weight decay
5e-4 on the conventional weights, ReLinear gammas 1e-2; the original's
augmentation, on the device: 4 black pixels of padding, a random crop
and a random horizontal flip per image; per-channel normalization).

Runs go in the order of `--runs` for each seed in turn; a run is started
only when the time it is expected to take (the previous run of the same
model, else of any) fits in what is left of `--budget`, and once one is
skipped so are all after it (listed as such), so that the arms differ by
one seed at most.
A run still going when the budget ends stops after its epoch and has no
final test accuracy. With JAX_COMPILATION_CACHE_DIR set, the seeds of a
model reuse its compilation (their programs are equal).

`--data` is an npz of uint8 `x_train`, `y_train`, `x_test`, `y_test`
(benchmarks/make_cifar_subset.py). Where the file is missing but its
parts are there (`<data>.part0`, `.part1`, ...: the maker's `--part-mib`),
they are joined and checked against `<data>.sha256` first.

The JSON (`--output`) is written after every run: each run's curves
(loss and accuracy, on the training and the test set, after every epoch;
for quadratic networks also `relinear_gate` and `relinear_square`, see
`kq.callbacks.QuadraticMonitor`), the epochs it collapsed in
(`collapses_in_epochs`: training accuracy more than 10 points below its
best so far, or a loss that is not finite; the first epoch of each) and
the epochs after which its test accuracy fell more than 20 points below
its best so far (`test_drops_after_epochs`, for reading only), and a
summary per model: mean and sd of the final-epoch test accuracies,
seconds per run, runs that collapsed, stopped or were skipped, and with
`--target` how many ended at or above it. With `--label-smoothing` the
losses (test loss included) are the smoothed ones. `--plot PNG` draws, one
column per model, the test accuracy per epoch of every run with an x at
each collapse and, for quadratic models, the relinear curves below it
(also with `--plot-only`).
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the package, from a checkout

from common import load_npz  # noqa: E402

RUN_NAMES = {"quadratic": "QResNet", "compact": "CompactQResNet",
             "linear": "ResNet"}


def parse_run(text):
    """'quadratic:20' -> ("quadratic", 20)."""
    neuron, _, depth = text.partition(":")
    if neuron not in RUN_NAMES or not depth.isdigit():
        raise argparse.ArgumentTypeError(
            f"a run is NEURON:DEPTH with NEURON one of {sorted(RUN_NAMES)} "
            f"and DEPTH 6n+2, e.g. quadratic:20; not {text!r}")
    return neuron, int(depth)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="npz of uint8 CIFAR-10 arrays")
    p.add_argument("--runs", nargs="+", type=parse_run,
                   default=[("quadratic", 20), ("linear", 20)],
                   help="NEURON:DEPTH, each trained for every seed "
                   "(default: quadratic:20 linear:20)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--learning-rate", type=float, default=0.2)
    p.add_argument("--warmup-epochs", type=float, default=2.0)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true",
                   help="Nesterov momentum (as torch.optim.SGD's)")
    p.add_argument("--global-clipnorm", type=float, default=None,
                   help="clip the gradients to this global norm (Keras's "
                   "global_clipnorm), a guard against a blow-up")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="the cross-entropy's label smoothing, in [0, 1)")
    p.add_argument("--gamma", type=float, default=1e-2,
                   help="ReLinear step factor of the gate and square "
                   "weights")
    p.add_argument("--mixed-precision", choices=("bf16", "none"),
                   default="bf16")
    p.add_argument("--steps-per-execution", type=int, default=1,
                   help="training steps per compiled call (1 on torch)")
    p.add_argument("--train-examples", type=int, default=None,
                   help="the first N training images only (smoke tests)")
    p.add_argument("--test-examples", type=int, default=None)
    p.add_argument("--target", type=float, default=None,
                   help="a test accuracy (a fraction) that the summary "
                   "counts the runs reaching at their final epoch")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole grid: runs that would not "
                   "finish in time are skipped")
    p.add_argument("--output", default="runs/cifar10_grid.json")
    p.add_argument("--weights-dir", default=None,
                   help="save each run's weights (fp32 .weights.h5) here")
    p.add_argument("--plot", default=None, help="PNG of the curves")
    p.add_argument("--plot-only", action="store_true",
                   help="draw --plot from an existing --output and stop")
    p.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    args = p.parse_args(argv)
    if args.plot_only:
        if not args.plot:
            p.error("--plot-only needs --plot PNG")
        return args
    if not args.data:
        p.error("--data is required (an npz of uint8 CIFAR-10 arrays)")
    for name in ("epochs", "batch_size", "steps_per_execution"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    for neuron, depth in args.runs:
        if depth < 8 or (depth - 2) % 6:
            p.error(f"--runs {neuron}:{depth}: the depth must be 6n+2 "
                    "(8, 14, 20, 32, 44, 56, ...)")
    if args.global_clipnorm is not None and not args.global_clipnorm > 0:
        p.error("--global-clipnorm must be > 0")
    if not 0 <= args.momentum <= 1:
        p.error("--momentum must be in [0, 1]")
    if args.nesterov and args.momentum == 0:
        p.error("--nesterov needs a --momentum > 0")
    if not 0 <= args.label_smoothing < 1:
        p.error("--label-smoothing must be in [0, 1)")
    if args.target is not None and not 0 < args.target <= 1:
        p.error("--target is a fraction in (0, 1], e.g. 0.93")
    if args.learning_rate <= 0 or not 0 <= args.warmup_epochs < args.epochs:
        p.error("--learning-rate must be > 0 and --warmup-epochs in "
                "[0, --epochs)")
    return args


def _crop_flip_layer():
    import keras

    class RandomCropFlip(keras.layers.Layer):
        """The original's augmentation on the device, in training only:
        each image padded with `padding` black pixels on every side, a
        random crop of the original size from it and a random horizontal
        flip, one draw per image (channels_last images of any dtype).
        Two gathers. Keras's RandomTranslation, tried first, shifts by an
        interpolated affine map: with it the step of a uint8-fed QResNet8
        took 597 ms against 289 ms with this layer and 322 ms with no
        augmentation (batch 100, JAX, 2-core CPU), and the first trial of
        the grid on an H200 (RandomTranslation, 10 steps per execution)
        ran at about 1 s per QResNet20 step of 500 images, against 7-8 ms
        for the grid's runs with this layer (and one step per
        execution)."""

        def __init__(self, padding=4, seed=None, **kwargs):
            super().__init__(**kwargs)
            self.padding = padding
            self.seed = seed
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, images, training=False):
            if not training:
                return images
            ops = keras.ops
            p = self.padding
            batch = ops.shape(images)[0]
            height, width = images.shape[1], images.shape[2]
            padded = ops.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
            offsets = keras.random.randint((batch, 2), 0, 2 * p + 1,
                                           seed=self.seed_generator)
            flip = keras.random.uniform((batch, 1),
                                        seed=self.seed_generator) < 0.5
            rows = offsets[:, :1] + ops.arange(height)[None]
            columns = offsets[:, 1:] + ops.arange(width)[None]
            columns = ops.where(flip, ops.flip(columns, axis=1), columns)
            images = ops.take_along_axis(padded, rows[:, :, None, None],
                                         axis=1)
            return ops.take_along_axis(images, columns[:, None, :, None],
                                       axis=2)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "padding": self.padding,
                    "seed": self.seed}

    return RandomCropFlip


def training_model(net, seed):
    """uint8 images -> augmentation -> `preprocess_input` -> `net`."""
    import keras

    import keras_quadratic as kq

    mean = [255 * m for m in kq.models.qresnet.CIFAR10_MEAN]
    std = [255 * s for s in kq.models.qresnet.CIFAR10_STD]
    inputs = keras.Input((32, 32, 3), dtype="uint8", name="images")
    x = _crop_flip_layer()(4, seed, dtype="float32", name="crop_flip")(
        inputs)
    # (x - 255 mean) / (255 std): preprocess_input's map, as a layer
    x = keras.layers.Normalization(mean=mean, variance=[s * s for s in std],
                                   dtype="float32", name="normalize")(x)
    return keras.Model(inputs, net(x), name=f"train_{net.name}")


def schedule(args, steps_per_epoch):
    """Linear warm-up from lr/10 over --warmup-epochs, then a cosine decay
    to 0: the harness's `--lr-schedule cosine`."""
    from keras_quadratic import cifar

    return cifar.learning_rate_schedule(argparse.Namespace(
        lr_schedule="cosine", epochs=args.epochs,
        learning_rate=args.learning_rate, warmup_epochs=args.warmup_epochs),
        steps_per_epoch)


def train_one(args, neuron, depth, seed, data, deadline=float("inf")):
    """One run; returns its JSON record (and saves its weights). Past
    `deadline` (time.time()) it stops after the epoch in progress, and the
    record says so (`stopped_after_epoch`)."""
    import keras
    import numpy as np

    import keras_quadratic as kq

    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(
        "mixed_bfloat16" if args.mixed_precision == "bf16" else "float32")
    try:
        net = kq.models.QResNet(depth, neuron, data_format="channels_last")
        model = training_model(net, seed)
    finally:
        keras.config.set_dtype_policy(policy)
    kq.regularizers.add_weight_decay(net, args.weight_decay)
    steps_per_epoch = len(x_train) // args.batch_size
    optimizer = kq.optimizers.PyTorchSGD(schedule(args, steps_per_epoch),
                                         momentum=args.momentum,
                                         nesterov=args.nesterov,
                                         global_clipnorm=args.global_clipnorm)
    callbacks = []
    if neuron != "linear":
        optimizer = kq.optimizers.ReLinearOptimizer(optimizer, args.gamma,
                                                    args.gamma)
        # how far the quadratic terms have moved, after every epoch
        callbacks.append(kq.callbacks.QuadraticMonitor(per_layer=False))
    if args.label_smoothing:  # (Keras smooths one-hot labels only)
        y_train, y_test = (np.eye(10, dtype="float32")[y]
                           for y in (y_train, y_test))
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=args.label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    backend = keras.backend.backend()
    model.compile(
        optimizer, loss, metrics=[accuracy],
        steps_per_execution=(1 if backend == "torch"
                             else args.steps_per_execution))
    epoch_seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.start)
            if time.time() > deadline:
                self.model.stop_training = True

    start = time.perf_counter()
    # the test set in batches that divide it (no second compiled shape)
    history = model.fit(
        x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
        validation_data=(x_test, y_test),
        validation_batch_size=_divisor(len(x_test), 1000),
        shuffle=True, callbacks=callbacks + [Timer()], verbose=args.verbose)
    seconds = time.perf_counter() - start
    curves = {key: [round(float(v), 5) for v in values]
              for key, values in history.history.items()}
    name = f"{RUN_NAMES[neuron]}{depth}"
    record = {
        "model": name, "depth": depth, "neuron": neuron, "seed": seed,
        "epochs": args.epochs,
        "test_accuracy": curves["val_accuracy"][-1],
        "seconds": round(seconds, 2),
        "seconds_per_epoch": round(statistics.median(epoch_seconds[1:]
                                                     or epoch_seconds), 3),
        "first_epoch_seconds": round(epoch_seconds[0], 2),
        "weights": None,
        "collapses_in_epochs": collapses(curves),
        "test_drops_after_epochs": test_drops(curves),
        "curves": curves,
    }
    if len(epoch_seconds) < args.epochs:
        record["stopped_after_epoch"] = len(epoch_seconds)
        record["test_accuracy"] = None  # not the recipe's final epoch
    if args.weights_dir:
        os.makedirs(args.weights_dir, exist_ok=True)
        path = os.path.join(args.weights_dir,
                            f"{name.lower()}_cifar10_seed{seed}.weights.h5")
        net.save_weights(path)  # float32 variables under mixed precision
        record["weights"] = os.path.basename(path)
    return record


def falls(values, drop, broken=None):
    """The first epoch (from 1) of each fall of a per-epoch series: an
    epoch whose value is more than `drop` below the best of the epochs
    before, not finite, or flagged in `broken`; a fall lasts until an epoch
    is none of these."""
    found, best, down = [], 0.0, False
    for epoch, value in enumerate(values, 1):
        below = not value >= best - drop  # (NaN included)
        below = below or bool(broken and broken[epoch - 1])
        if below and not down:
            found.append(epoch)
        down = below
        if math.isfinite(value):
            best = max(best, value)
    return found


def collapses(curves, drop=0.1):
    """The epochs a run collapsed in (the first of each collapse): its
    training accuracy more than `drop` below its best so far, or its
    training loss not finite. Training figures only: the test set picks
    nothing."""
    broken = [not math.isfinite(loss) for loss in curves["loss"]]
    return falls(curves["accuracy"], drop, broken)


def test_drops(curves, drop=0.2):
    """The epochs after which the test accuracy fell to more than `drop`
    below its best so far (the first of each fall): for reading (a model
    whose batch-norm moving statistics were thrown off shows it here and
    not in training), never to pick anything."""
    return falls(curves.get("val_accuracy", []), drop)


def summary(runs, target=None):
    """Per model: over its finished runs, the final test accuracies' mean
    and sd and the seconds per run; how many of its trained runs collapsed
    at least once (the arm's collapse rate; runs stopped by the budget
    count), how many were stopped or skipped by the budget and, with
    `target`, how many finished at or above it."""
    table = {}
    for run in runs:
        row = table.setdefault(run["model"], {
            "runs": 0, "seeds": [], "mean": None, "sd": None,
            "seconds_mean": None, "collapsed": 0, "stopped": 0,
            "skipped": 0, "accuracies": [], "seconds": []})
        if "skipped" in run:
            row["skipped"] += 1
            continue
        row["collapsed"] += bool(collapses(run["curves"]))
        if run.get("test_accuracy") is None:
            row["stopped"] += 1
            continue
        row["runs"] += 1
        row["seeds"].append(run["seed"])
        row["accuracies"].append(run["test_accuracy"])
        row["seconds"].append(run["seconds"])
    for row in table.values():
        accuracies, seconds = row.pop("accuracies"), row.pop("seconds")
        if accuracies:
            row["mean"] = round(statistics.mean(accuracies), 5)
            row["seconds_mean"] = round(statistics.mean(seconds), 1)
        if len(accuracies) > 1:
            row["sd"] = round(statistics.stdev(accuracies), 5)
        if target is not None:
            row["at_or_above_target"] = sum(a >= target for a in accuracies)
    return table


def summary_line(model, row, target=None):
    """One model's summary as a line of text."""
    trained = row["runs"] + row["stopped"]
    parts = [f"{row['collapsed']} of {trained} collapsed"]
    if row["mean"] is not None:
        sd = "" if row["sd"] is None else f" +- {100 * row['sd']:.2f}"
        parts.insert(0, f"{100 * row['mean']:.2f}%{sd} over seeds "
                     f"{row['seeds']}, {row['seconds_mean']:.0f} s a run")
        if target is not None:
            parts.append(f"{row['at_or_above_target']} at or above "
                         f"{100 * target:g}%")
    parts += [f"{row[k]} {k}" for k in ("stopped", "skipped") if row[k]]
    return f"{model}: " + ", ".join(parts)


def _divisor(n, at_most):
    """The largest divisor of n that is at most `at_most`."""
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def plot(results, path):
    """One column per model: the test accuracy per epoch of every run
    (each collapse in training marked with an x) and, for quadratic
    models, `relinear_square` (solid) and `relinear_gate` (dashed) below
    it."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    runs = [r for r in results["runs"] if "curves" in r]
    models = list(dict.fromkeys(r["model"] for r in runs))  # run order
    if not models:
        return
    quadratic = any("relinear_square" in r["curves"] for r in runs)
    rows = 2 if quadratic else 1
    fig = Figure(figsize=(5 * len(models), 4 * rows))
    axes = fig.subplots(rows, len(models), squeeze=False)
    for column, model in enumerate(models):
        ax = axes[0][column]
        model_runs = [r for r in runs if r["model"] == model]
        finite = [a for r in model_runs for a in r["curves"]["val_accuracy"]
                  if math.isfinite(a)]
        bottom = min(40, 10 * int(10 * min(finite, default=0.0)))
        for r in model_runs:
            accuracy = [100 * a for a in r["curves"]["val_accuracy"]]
            label = f"seed {r['seed']}: {accuracy[-1]:.2f}%"
            if "stopped_after_epoch" in r:
                label += f" (stopped after epoch {r['stopped_after_epoch']})"
            line, = ax.plot(range(1, len(accuracy) + 1), accuracy,
                            label=label)
            marked = [e for e in collapses(r["curves"])
                      if e <= len(accuracy)]
            heights = [accuracy[e - 1] if math.isfinite(accuracy[e - 1])
                       else bottom for e in marked]  # (NaN: on the axis)
            ax.plot(marked, heights, "x", color=line.get_color(),
                    markersize=9)
        ax.set_title(model)
        ax.set_xlabel("epoch (x: a collapse in training)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(bottom, 100)  # a collapse shows
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        if not quadratic:
            continue
        ax = axes[1][column]
        for r in model_runs:
            curves = r["curves"]
            if "relinear_square" not in curves:
                continue
            epochs = range(1, len(curves["relinear_square"]) + 1)
            line, = ax.plot(epochs, curves["relinear_square"],
                            label=f"seed {r['seed']}")
            if "relinear_gate" in curves:
                ax.plot(epochs, curves["relinear_gate"], "--",
                        color=line.get_color())
        if ax.lines:
            ax.set_ylabel("relinear_square (solid), relinear_gate (dashed)")
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend(loc="best")
        else:
            ax.set_axis_off()  # a linear model: no quadratic terms
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"CIFAR-10, {results.get('card', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def save(results, path, target=None):
    """Writes `results` with its summary brought up to date."""
    results["summary"] = summary(results["runs"], target)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)


def main(argv=None):
    args = parse_args(argv)
    if args.plot_only:
        with open(args.output) as f:
            plot(json.load(f), args.plot)
        print(f"wrote {args.plot}")
        return 0
    start = time.time()
    x_train, y_train, x_test, y_test = load_npz(args.data)
    if args.train_examples:
        x_train, y_train = (a[:args.train_examples] for a in (x_train,
                                                              y_train))
    if args.test_examples:
        x_test, y_test = (a[:args.test_examples] for a in (x_test, y_test))
    left_out = len(x_train) % args.batch_size
    if left_out:  # (a smaller last batch would compile a second program)
        print(f"note: the last {left_out} training images are left out "
              "(whole batches only)", flush=True)
        x_train, y_train = x_train[:-left_out], y_train[:-left_out]
    import keras

    import keras_quadratic as kq

    backend = keras.backend.backend()
    device = kq.devices.compute_device()
    recipe = {k: v for k, v in vars(args).items() if k not in (
        "data", "output", "weights_dir", "plot", "plot_only", "verbose",
        "budget", "runs", "seeds", "target")}
    recipe.update(optimizer="ReLinearOptimizer(PyTorchSGD) for quadratic "
                  "models, PyTorchSGD for linear ones",
                  schedule="linear warm-up from lr/10, then cosine to 0",
                  weight_decay_style="coupled (PyTorch's), conventional "
                  "weights only",
                  augmentation="4-pixel zero padding, random 32x32 crop "
                  "and random horizontal flip, per image, on the device",
                  train_examples=int(len(x_train)),
                  test_examples=int(len(x_test)))
    results = {
        "dataset": "cifar10", "card": device["name"],
        "date": time.strftime("%Y-%m-%d"), "backend": backend,
        "versions": {"keras": keras.__version__,
                     backend: __import__(backend).__version__,
                     "python": platform.python_version()},
        "recipe": recipe, "target": args.target, "runs": [],
    }
    print(f"{backend} on {device['platform']} ({device['name']}); "
          f"{len(x_train)} train / {len(x_test)} test images", flush=True)
    data = (x_train, y_train.astype("int32"), x_test, y_test.astype("int32"))
    expected, out_of_time = {}, False
    for seed in args.seeds:
        for neuron, depth in args.runs:
            name = f"{RUN_NAMES[neuron]}{depth}"
            left = (args.budget - (time.time() - start)
                    if args.budget else float("inf"))
            guess = expected.get(name, max(expected.values(), default=0.0))
            if out_of_time or guess > left:
                out_of_time = True
                print(f"skip {name} seed {seed}: about {guess:.0f} s, "
                      f"{left:.0f} s left", flush=True)
                results["runs"].append({
                    "model": name, "depth": depth, "neuron": neuron,
                    "seed": seed, "epochs": args.epochs,
                    "skipped": "time budget"})
                save(results, args.output, args.target)
                continue
            print(f"== {name} seed {seed}", flush=True)
            record = train_one(args, neuron, depth, seed, data,
                               start + (args.budget or float("inf")))
            expected[name] = record["seconds"]
            print(f"   {name} seed {seed}: test accuracy "
                  f"{record['curves']['val_accuracy'][-1]:.4f} after "
                  f"{len(record['curves']['val_accuracy'])} epochs in "
                  f"{record['seconds']:.0f} s ({record['seconds_per_epoch']:.2f}"
                  " s/epoch)", flush=True)
            results["runs"].append(record)
            save(results, args.output, args.target)
    results["seconds"] = round(time.time() - start, 1)
    save(results, args.output, args.target)
    for model, row in results["summary"].items():
        print(summary_line(model, row, args.target), flush=True)
    if args.plot:
        plot(results, args.plot)
    print(f"wrote {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
