"""Accuracy parity with the original code: the plain PyTorch reference
(benchmarks/torch_reference.py: the original network, its parameter groups
with the quadratic weights at lr * gamma, torch.optim.SGD's coupled weight
decay on every parameter, as the original) and keras-quadratic
(examples/cifar10.py with its defaults) trained on the same short recipe,
on the same data pipeline (tf.data: random crop of the 4-pixel zero-padded
image, horizontal flip, per-channel normalization), side by side.

    python benchmarks/parity.py --data-dir DIR --epochs 3 --backend tensorflow

Recipe: SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by
10 after 50% and 75% of the epochs (`--lr-schedule cosine`: a warm-up
over `--warmup-epochs`, then a cosine decay to 0; either way the
reference is given, step by step, the learning rate of the example's own
Keras schedule), gamma 1e-2 for both quadratic groups, seed 0; the final
epoch's test accuracy is reported for each. Prints a table and writes
parity.json and parity.png (the test accuracy after each epoch) into
--output-dir (default runs/parity).

Without TensorFlow (e.g. on a GPU machine), `--npz FILE` (uint8 arrays from
benchmarks/make_cifar_subset.py) trains both on in-memory data instead,
with the same augmentation in NumPy and literally the same batches for
both (one seeded generator each), the Keras side in a process of its own
with the example's model and optimizer (`keras_quadratic.cifar.build_and_compile`):

    python benchmarks/parity.py --npz subset.npz --backend jax --seeds 0 1 2

With `--keras-init reference` (npz only), keras-quadratic starts from the
very weights the reference starts from for each seed (PyTorch's draw,
handed over as an npz in --output-dir), so that the two differ in
training alone, not in the draw.

keras-quadratic's SGD is `kq.optimizers.PyTorchSGD`, the example's
default, whose momentum rule is the reference's. `--sgd keras` gives it
`keras.optimizers.SGD` instead (Keras's rule: the two take other steps
while the learning rate changes), and `--reference-momentum keras` gives
the reference's torch.optim.SGD Keras's rule too (diagnostics: the
figures measured before PyTorchSGD existed were `--sgd keras`).

`--backend` defaults to $KERAS_BACKEND, else tensorflow.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


class NumpyBatches:
    """In-memory CIFAR batches with the example's augmentation (random crop
    of the 4-pixel zero-padded uint8 image, horizontal flip) and
    normalization, in NumPy: a seeded generator gives every epoch's order
    and crops, so two consumers with one seed see the same batches."""

    def __init__(self, x, y, batch_size, training, data_format, seed):
        self.x, self.y = x, y.astype("int64")
        self.batch_size, self.training = batch_size, training
        self.data_format = data_format
        self.seed = seed
        self.steps = (len(x) // batch_size if training
                      else -(-len(x) // batch_size))

    def epoch(self, number=0):
        """The batches of epoch `number` (its own generator: the same
        whenever asked)."""
        import numpy as np

        from keras_quadratic.cifar import MEAN
        from keras_quadratic.cifar import STD

        rng = np.random.default_rng([self.seed, number])
        order = (rng.permutation(len(self.x)) if self.training
                 else np.arange(len(self.x)))
        for step in range(self.steps):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            images = self.x[index]
            if self.training:
                padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
                offsets = rng.integers(0, 9, (len(index), 2))
                flips = rng.random(len(index)) < 0.5
                images = np.stack([
                    padded[i, r:r + 32, c:c + 32][:, ::-1 if f else 1]
                    for i, (r, c), f in zip(range(len(index)), offsets,
                                            flips)])
            images = ((images.astype("float32") / 255.0 - np.float32(MEAN))
                      / np.float32(STD)).astype("float32")
            if self.data_format == "channels_first":
                images = images.transpose(0, 3, 1, 2)
            yield np.ascontiguousarray(images), self.y[index]


def load_npz(args, data_format, seed):
    import numpy as np

    with np.load(args.npz) as data:
        arrays = {k: data[k] for k in data.files}
    return (NumpyBatches(arrays["x_train"], arrays["y_train"],
                         args.batch_size, True, data_format, seed),
            NumpyBatches(arrays["x_test"], arrays["y_test"],
                         args.batch_size, False, data_format, seed))


def torch_run(args, neuron):
    """Trains the PyTorch reference; test accuracy after each epoch."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from torch_reference import ResNet
    from torch_reference import reference_optimizer

    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    if args.npz:
        train_ds, test_ds = load_npz(args, "channels_first", args.seed)
        steps_per_epoch = train_ds.steps
        epoch_of = lambda data, number: data.epoch(number)  # noqa: E731
    else:
        import tensorflow as tf

        from keras_quadratic import cifar

        tf.config.set_visible_devices([], "GPU")
        data = argparse.Namespace(
            dataset="cifar10", data_dir=args.data_dir, download=True,
            train_split=args.train_split, test_split=args.test_split,
            mock_data=args.mock_data, mock_examples=256)
        train, test, _ = cifar.load_splits(data)
        train_ds = cifar.in_memory(train)  # as the example
        steps_per_epoch = cifar.steps_per_epoch(train_ds, args.batch_size)
        test_ds = cifar.test_pipeline(test, args.batch_size, "channels_first")

        def epoch_of(data, number):
            if data is test_ds:
                return data.as_numpy_iterator()
            return cifar.training_pipeline(
                data, args.batch_size, "channels_first", args.seed,
                number + 1, number).as_numpy_iterator()
    model = ResNet(args.depth, neuron).to(device)
    if args.keras_init == "reference":  # for keras_model, before training
        np.savez(initial_weights_path(args, neuron),
                 **{name: value.detach().cpu().numpy()
                    for name, value in model.state_dict().items()})
    optimizer = reference_optimizer(model, args.lr, args.gamma, 0.9,
                                    args.weight_decay)
    # the quadratic group at lr * gamma, whatever the step's lr
    factors = [group["lr"] / args.lr for group in optimizer.param_groups]
    rates = learning_rates(args, steps_per_epoch)
    accuracies, step = [], 0
    for epoch in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for x, y in epoch_of(train_ds, epoch):
            set_step_rate(optimizer, factors, rates, step,
                          args.reference_momentum)
            x = torch.from_numpy(x).to(device)
            y = torch.from_numpy(y.astype(np.int64)).to(device)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            step += 1
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in epoch_of(test_ds, 0):
                logits = model(torch.from_numpy(x).to(device))
                correct += int((logits.argmax(1).cpu().numpy() == y).sum())
                total += len(y)
        accuracies.append(correct / total)
        print(f"pytorch-reference {neuron} epoch {epoch + 1}: test accuracy "
              f"{accuracies[-1]:.4f} ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr, flush=True)  # progress; stdout has the result
    return accuracies


def set_step_rate(optimizer, factors, rates, step, momentum="pytorch"):
    """Gives the reference's parameter groups step `step`'s learning rate
    (`rates[step]`, the last one past the end) times their factors (1 and
    gamma); with `momentum="keras"`, also makes the coming step Keras's
    (`keras_style_momentum`). Called before every step."""
    rate = float(rates[min(step, len(rates) - 1)])
    if momentum == "keras" and step:
        keras_style_momentum(optimizer, float(
            rates[min(step - 1, len(rates) - 1)]), rate)
    for group, factor in zip(optimizer.param_groups, factors):
        group["lr"] = rate * factor


def keras_style_momentum(optimizer, previous_rate, rate):
    """Makes the coming `torch.optim.SGD` step Keras's, if every earlier
    step but the first was given this as well: rescales every momentum
    buffer by previous_rate / rate. PyTorch keeps the gradients' discounted
    sum and applies the current rate to all of it (`b = m b + g;
    w -= lr b`); Keras keeps the steps' (`v = m v - lr g; w += v`), each
    gradient at the rate of its own step. With b = -v / lr the two
    coincide. A diagnostic (`--reference-momentum keras`): the original
    is PyTorch's."""
    if rate == previous_rate:
        return
    if rate <= 0.0:
        raise ValueError(
            "--reference-momentum keras cannot follow a learning rate that "
            f"drops to {rate} after {previous_rate} (Keras's step is then "
            "momentum * v; PyTorch's is 0)")
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            buffer = optimizer.state[parameter].get("momentum_buffer")
            if buffer is not None:
                buffer.mul_(previous_rate / rate)


def recipe_flags(args, neuron):
    """examples/cifar10.py's flags for the recipe (both sides train on
    it: the Keras side as these flags, the reference through
    `learning_rates`)."""
    return ["--depth", str(args.depth), "--neuron", neuron,
            "--epochs", str(args.epochs), "--batch-size",
            str(args.batch_size), "--learning-rate", str(args.lr),
            "--lr-schedule", args.lr_schedule, "--warmup-epochs",
            str(args.warmup_epochs), "--weight-decay",
            str(args.weight_decay), "--sgd", args.sgd,
            "--gamma-g", str(args.gamma), "--gamma-b", str(args.gamma),
            "--seed", str(args.seed)]


def learning_rates(args, steps_per_epoch):
    """The learning rate of every step, from the example's own Keras
    schedule (`cifar.learning_rate_schedule`): what the reference is
    given step by step, so both follow one schedule."""
    import keras
    import numpy as np

    from keras_quadratic import cifar

    recipe = cifar.parse_args(recipe_flags(args, "quadratic"))
    schedule = cifar.learning_rate_schedule(recipe, steps_per_epoch)
    return np.array([float(keras.ops.convert_to_numpy(schedule(step)))
                     for step in range(args.epochs * steps_per_epoch)])


def keras_batches(source):
    """`source`'s batches for `model.fit`: a PyDataset and the callback
    that gives it epoch e's batches when epoch e begins (Keras reads a
    batch to build the model and calls `PyDataset.on_epoch_end` at odd
    times, so the epoch number comes from the callback). Fit with
    `shuffle=False`."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.batches = list(source.epoch(0))

        def __len__(self):
            return source.steps

        def __getitem__(self, index):
            return self.batches[index]

    class EpochBatches(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            dataset.batches = list(source.epoch(epoch))

    dataset = Batches()
    return dataset, EpochBatches()


def keras_model(args, neuron, steps_per_epoch, data_format):
    """The example's model and optimizer (`cifar.build_and_compile`);
    with `--keras-init reference`, given the initial weights that
    `torch_run` drew (with PyTorch) and trained from, so that both start
    from the same point."""
    from keras_quadratic import cifar

    recipe = cifar.parse_args(recipe_flags(args, neuron))
    model = cifar.build_and_compile(recipe, steps_per_epoch, 10,
                                      data_format)
    if args.keras_init == "reference":
        import numpy as np

        from reference_weights import copy_to_keras

        with np.load(initial_weights_path(args, neuron)) as weights:
            copy_to_keras(weights, model)
    return model


def initial_weights_path(args, neuron):
    """Where `torch_run` leaves the reference's initial weights (a
    `state_dict` as npz) for `keras_model`: a file, so that the Keras
    process never imports torch next to JAX or TensorFlow."""
    return os.path.join(
        output_dir(args),
        f"reference-initial-{neuron}-depth{args.depth}-seed{args.seed}.npz")


def output_dir(args):
    return args.output_dir or os.path.join("runs", "parity")


def keras_npz_run(args, neuron):
    """`keras_model` (the example's model and optimizer) with `model.fit`
    on the in-memory batches; test accuracy after each epoch."""
    import keras

    keras.utils.set_random_seed(args.seed)
    data_format = keras.config.image_data_format()
    train, test = load_npz(args, data_format, args.seed)
    model = keras_model(args, neuron, train.steps, data_format)
    train_batches, callback = keras_batches(train)
    test_batches, _ = keras_batches(test)
    history = model.fit(train_batches, epochs=args.epochs, shuffle=False,
                        validation_data=test_batches, callbacks=[callback],
                        verbose=2)
    return [float(a) for a in history.history["val_accuracy"]]


def keras_run(args, neuron):
    """examples/cifar10.py with the recipe's flags; test accuracy after
    each epoch."""
    out = os.path.join(output_dir(args), f"keras-{args.backend}-{neuron}-"
                       f"{args.sgd}-seed{args.seed}")
    command = [
        sys.executable, os.path.join(ROOT, "examples", "cifar10.py"),
        *recipe_flags(args, neuron), "--train-split", args.train_split,
        "--test-split", args.test_split, "--output-dir", out,
        "--verbose", "2"]
    command += ["--mock-data"] if args.mock_data else [
        "--data-dir", args.data_dir]
    env = dict(os.environ, KERAS_BACKEND=args.backend)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, env.get("PYTHONPATH")) if p)
    subprocess.run(command, check=True, env=env)
    with open(os.path.join(out, "log.csv")) as f:
        import csv

        # (a finished run left its log: a rerun appends to it)
        rows = list(csv.DictReader(f))[-args.epochs:]
        return [float(r["val_accuracy"]) for r in rows]


def run_worker(kind, neuron, seed, args):
    """One training run in a process of its own; its per-epoch accuracies.
    `kind` is "torch" or "keras" (the latter only with --npz: without it,
    the Keras side is examples/cifar10.py itself)."""
    env = dict(os.environ, KERAS_BACKEND=args.backend)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    worker = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker",
         f"{kind}:{neuron}", *args.argv, "--seeds", str(seed)],
        check=True, stdout=subprocess.PIPE, text=True, env=env)
    return json.loads(worker.stdout.strip().splitlines()[-1])


def main_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--mock-data", action="store_true")
    p.add_argument("--npz", default=None,
                   help="in-memory uint8 CIFAR-10 arrays instead of tfds "
                   "(benchmarks/make_cifar_subset.py); needs no TensorFlow")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--lr-schedule", choices=("step", "cosine"),
                   default="step",
                   help="examples/cifar10.py's --lr-schedule, for both")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--gamma", type=float, default=1e-2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--backend",
                   default=os.environ.get("KERAS_BACKEND", "tensorflow"),
                   choices=("tensorflow", "jax", "torch"))
    p.add_argument("--neurons", nargs="+", default=["quadratic", "linear"],
                   choices=("quadratic", "linear"))
    p.add_argument("--keras-init", choices=("own", "reference"),
                   default="own",
                   help="keras-quadratic's initial weights: its own draw "
                   "(default) or the very weights the reference starts "
                   "from (PyTorch's draw, as a file; needs --npz), so the "
                   "two differ only in training")
    p.add_argument("--reference-momentum", choices=("pytorch", "keras"),
                   default="pytorch",
                   help="the reference's SGD momentum: PyTorch's, as the "
                   "original (default), or Keras's formulation, whose "
                   "steps follow a changing learning rate about "
                   "1 / (1 - 0.9) = 10 steps late (a diagnostic, to pair "
                   "with --sgd keras)")
    p.add_argument("--sgd", choices=("pytorch", "keras"),
                   default="pytorch",
                   help="keras-quadratic's momentum rule (examples/"
                   "cifar10.py's --sgd): PyTorch's, as the reference "
                   "(default), or keras.optimizers.SGD's (a diagnostic)")
    p.add_argument("--output-dir", default=None,
                   help="where parity.json goes (default runs/parity)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    p = main_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    args.seed = args.seeds[0]
    if args.keras_init == "reference" and not args.npz:
        p.error("--keras-init reference needs --npz (the Keras side is "
                "then trained in this script, not by examples/cifar10.py)")
    if args.worker:  # one run, in a process of its own
        kind, neuron = args.worker.split(":")
        run = torch_run if kind == "torch" else keras_npz_run
        # progress (Keras's epoch logs) to stderr: stdout has the result
        with contextlib.redirect_stdout(sys.stderr):
            accuracies = run(args, neuron)
        print(json.dumps(accuracies))
        return
    os.makedirs(output_dir(args), exist_ok=True)
    data = (os.path.basename(args.npz) if args.npz else
            f"{args.train_split} / {args.test_split}")
    results = []
    for neuron in args.neurons:
        for seed in args.seeds:
            reference = run_worker("torch", neuron, seed, args)
            if args.npz:
                ours = run_worker("keras", neuron, seed, args)
            else:
                args.seed = seed
                ours = keras_run(args, neuron)
            results.append({"neuron": neuron, "seed": seed,
                            "pytorch_reference": reference,
                            "keras_quadratic": ours})
            print(f"{neuron} seed {seed}: reference {reference}, "
                  f"keras-quadratic {ours}", file=sys.stderr, flush=True)
            with open(os.path.join(output_dir(args), "parity.json"),
                      "w") as f:
                json.dump({"args": vars(args), "results": results}, f,
                          indent=2)
    print(table(results, args, data))
    plot(results, args, os.path.join(output_dir(args), "parity.png"))


def plot(results, args, path):
    """Test accuracy after each epoch, each seed a thin line and the mean
    over seeds a thick one, the reference against keras-quadratic, one
    panel per model; a PNG (a Figure of its own). Skipped, with a line on
    stderr, where matplotlib is missing (e.g. a GPU machine)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("parity.py: no matplotlib, no plot", file=sys.stderr)
        return
    import numpy as np

    neurons = [n for n in args.neurons
               if any(r["neuron"] == n for r in results)]
    if not neurons:
        return
    fig = Figure(figsize=(5 * len(neurons), 4))
    axes = np.atleast_1d(fig.subplots(1, len(neurons)))
    for ax, neuron in zip(axes, neurons):
        rows = [r for r in results if r["neuron"] == neuron]
        for side, label, color in (
                ("pytorch_reference", "PyTorch reference", "tab:blue"),
                ("keras_quadratic", f"keras-quadratic ({args.backend})",
                 "tab:orange")):
            curves = [100 * np.asarray(r[side]) for r in rows]
            for curve in curves:
                ax.plot(np.arange(1, len(curve) + 1), curve, color=color,
                        alpha=0.3, lw=1)
            length = min(len(curve) for curve in curves)
            ax.plot(np.arange(1, length + 1),
                    np.mean([curve[:length] for curve in curves], 0),
                    color=color, lw=2.5,
                    label=f"{label}, mean of {len(rows)}")
        ax.set_title(("Q" if neuron == "quadratic" else "")
                     + f"ResNet{args.depth}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{args.epochs} epochs ({args.lr_schedule} schedule), "
                 "each seed thin")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def table(results, args, data):
    import numpy as np

    name = lambda n: ("Q" if n == "quadratic" else "") + f"ResNet{args.depth}"  # noqa
    init = (", from the reference's initial weights"
            if args.keras_init == "reference" else "")
    momentum = (" (Keras's momentum)" if args.reference_momentum == "keras"
                else "")
    if args.sgd == "keras":
        init += ", Keras's momentum"
    lines = [f"\n{args.epochs} epochs ({args.lr_schedule} schedule), {data}, "
             f"seeds {', '.join(map(str, args.seeds))}; final-epoch test "
             "accuracy (%)\n",
             f"| model | seed | PyTorch reference{momentum} | keras-quadratic "
             f"({args.backend}{init}) | difference (points) |",
             "| --- | --- | ---: | ---: | ---: |"]
    for neuron in args.neurons:
        rows = [r for r in results if r["neuron"] == neuron]
        ref = np.array([100 * r["pytorch_reference"][-1] for r in rows])
        ours = np.array([100 * r["keras_quadratic"][-1] for r in rows])
        for r, a, b in zip(rows, ref, ours):
            lines.append(f"| {name(neuron)} | {r['seed']} | {a:.2f} | "
                         f"{b:.2f} | {b - a:+.2f} |")
        if len(rows) > 1:
            differences = ours - ref
            lines.append(
                f"| {name(neuron)} | mean +- sd | {ref.mean():.2f} +- "
                f"{ref.std(ddof=1):.2f} | {ours.mean():.2f} +- "
                f"{ours.std(ddof=1):.2f} | {differences.mean():+.2f} +- "
                f"{differences.std(ddof=1):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
