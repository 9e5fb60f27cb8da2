"""Collapse and the linear-to-quadratic transition, measured.

1. Collapse: a conventional CNN vs the same CNN with quadratic convolutions
   initialized randomly (no ReLinear), with the ReLinear initialization only,
   and with full ReLinear (initialization + step shrinking), across learning
   rates, with and without batch normalization, over several seeds. A run
   has collapsed when its loss is not finite or its test accuracy stays at
   chance (below 1.5x chance).
2. Transition: with ReLinear initialization, a sweep of the step factor
   gamma (= gamma_g = gamma_b) and of the regularizer coefficients
   (gate_l2 = square_l2), with the monitor's relinear_gate/relinear_square
   and the test accuracy at the end.

Data: scikit-learn's digits (8x8, 10 classes; ships with scikit-learn), or a
CIFAR-10 subset from a tfds data dir with --data-dir. Writes runs.csv,
collapse.png and transition.png to --output-dir.

    KERAS_BACKEND=tensorflow python examples/relinear_study.py
"""

import argparse
import csv
import math
import os
import time

import numpy as np

VARIANTS = ("conventional", "quadratic_random", "relinear_init",
            "relinear_full")
GAMMAS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
REGULARIZERS = (1e-4, 1e-3, 1e-2, 1e-1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None,
                   help="tfds data dir with cifar10 (else: digits)")
    p.add_argument("--train-split", default="train[:5000]")
    p.add_argument("--test-split", default="test[:1000]")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rates", type=float, nargs="+",
                   default=[0.01, 0.1, 0.5])
    p.add_argument("--transition-lr", type=float, default=0.1)
    p.add_argument("--gamma", type=float, default=1e-2,
                   help="ReLinear step factor of the 'relinear_full' variant")
    p.add_argument("--quick", action="store_true",
                   help="1 seed, 2 epochs, one rate, 3 gammas (for tests)")
    p.add_argument("--output-dir", default="runs/relinear_study")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = 1, 2
        args.learning_rates = [0.1]
    return args


def load_data(args):
    """(x_train, y_train, x_test, y_test) as float32 NHWC and int labels."""
    if args.data_dir:
        import tensorflow_datasets as tfds

        def load(split):
            ds = tfds.load("cifar10", split=split, data_dir=args.data_dir,
                           download=False, as_supervised=True, batch_size=-1)
            x, y = tfds.as_numpy(ds)
            return x.astype("float32") / 255.0, y.astype("int32")

        x_train, y_train = load(args.train_split)
        x_test, y_test = load(args.test_split)
    else:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = digits.images.astype("float32")[..., None] / 16.0
        x_train, x_test, y_train, y_test = train_test_split(
            x, digits.target.astype("int32"), test_size=0.2, random_state=0,
            stratify=digits.target)
    mean = x_train.mean(axis=(0, 1, 2))
    std = x_train.std(axis=(0, 1, 2)) + 1e-6
    return ((x_train - mean) / std, y_train, (x_test - mean) / std, y_test)


def build(variant, input_shape, batch_norm, regularizer=None):
    """A small CNN: conv(32) - conv(64, stride 2) - conv(64, stride 2) -
    pool - dense; the convolutions quadratic except for 'conventional'."""
    import keras

    import keras_quadratic as kq

    layers = [keras.Input(input_shape)]
    for filters, stride in ((32, 1), (64, 2), (64, 2)):
        kwargs = dict(strides=stride, padding="same",
                      kernel_initializer="he_normal")
        if variant == "conventional":
            conv = keras.layers.Conv2D(filters, 3, **kwargs)
        elif variant == "quadratic_random":
            conv = kq.QuadraticConv2D(
                filters, 3, gate_kernel_initializer="he_normal",
                gate_bias_initializer="zeros",
                square_kernel_initializer="he_normal", **kwargs)
        else:
            conv = kq.QuadraticConv2D(filters, 3,
                                      relinear_regularizer=regularizer,
                                      **kwargs)
        layers.append(conv)
        if batch_norm:
            layers.append(keras.layers.BatchNormalization())
        layers.append(keras.layers.Activation("relu"))
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)]
    return keras.Sequential(layers)


def run(data, args, variant, lr, batch_norm, seed, gamma=1.0,
        regularization=0.0):
    import keras

    import keras_quadratic as kq

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = data
    regularizer = (kq.regularizers.ReLinearRegularizer(gate_l2=regularization,
                                            square_l2=regularization)
                   if regularization else None)
    model = build(variant, x_train.shape[1:], batch_norm, regularizer)
    optimizer = keras.optimizers.SGD(lr, momentum=0.9)
    if variant != "conventional":
        optimizer = kq.optimizers.ReLinearOptimizer(optimizer, gamma, gamma)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    monitor = kq.callbacks.QuadraticMonitor(per_layer=False)
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=args.batch_size,
                        epochs=args.epochs, verbose=0, callbacks=[monitor])
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    losses = history.history["loss"] + [loss]
    chance = 1.0 / len(np.unique(y_train))
    finite = all(math.isfinite(v) for v in losses)
    collapsed = not finite or not accuracy > 1.5 * chance
    return {
        "variant": variant, "learning_rate": lr, "batch_norm": batch_norm,
        "seed": seed, "gamma": gamma, "regularization": regularization,
        "test_accuracy": float(accuracy) if finite else 0.0,
        "final_train_loss": float(history.history["loss"][-1]),
        "collapsed": collapsed,
        "relinear_gate": history.history["relinear_gate"][-1]
        if variant != "conventional" else 0.0,
        "relinear_square": history.history["relinear_square"][-1]
        if variant != "conventional" else 0.0,
        "seconds": time.perf_counter() - start,
    }


def plot_collapse(rows, path):
    from matplotlib.figure import Figure  # no global matplotlib state

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, batch_norm in zip(axes, (True, False)):
        for i, variant in enumerate(VARIANTS):
            sel = [r for r in rows if r["study"] == "collapse"
                   and r["variant"] == variant
                   and r["batch_norm"] == batch_norm]
            if not sel:
                continue
            jitter = 1 + 0.04 * (i - 1.5)
            ok = [r for r in sel if not r["collapsed"]]
            bad = [r for r in sel if r["collapsed"]]
            line = ax.plot([r["learning_rate"] * jitter for r in ok],
                           [r["test_accuracy"] for r in ok], "o", alpha=0.7,
                           label=variant)[0]
            ax.plot([r["learning_rate"] * jitter for r in bad],
                    [r["test_accuracy"] for r in bad], "x", ms=9,
                    color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (SGD, momentum 0.9)")
        ax.set_title(f"{'with' if batch_norm else 'without'} batch norm "
                     "(x = collapsed)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _mean_by(rows, key, value):
    xs = sorted({r[key] for r in rows})
    return xs, [np.mean([r[value] for r in rows if r[key] == x]) for x in xs]


def plot_transition(rows, path):
    from matplotlib.figure import Figure  # no global matplotlib state

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, study, key, label in (
        (axes[0], "gamma", "gamma", "gamma (gamma_g = gamma_b)"),
        (axes[1], "regularizer", "regularization",
         "ReLinear regularizer (gate_l2 = square_l2)"),
    ):
        sel = [r for r in rows if r["study"] == study]
        if not sel:
            continue
        xs, acc = _mean_by(sel, key, "test_accuracy")
        positions = [x if x > 0 else min(v for v in xs if v > 0) / 10
                     for x in xs]
        ax.plot(positions, acc, "o-", color="C0", label="test accuracy")
        ax.set_xscale("log")
        ax.set_xlabel(label + " (leftmost point: 0)")
        ax.set_ylabel("test accuracy", color="C0")
        twin = ax.twinx()
        for metric, color in (("relinear_gate", "C1"),
                              ("relinear_square", "C2")):
            twin.plot(positions, _mean_by(sel, key, metric)[1], "s--",
                      color=color, label=metric)
        twin.set_ylabel("distance from linear")
        twin.legend(fontsize=8, loc="center right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    args = parse_args(argv)
    import keras

    data = load_data(args)
    os.makedirs(args.output_dir, exist_ok=True)
    plan = []
    for seed in range(args.seeds):
        for batch_norm in (True, False):
            for lr in args.learning_rates:
                for variant in VARIANTS:
                    gamma = args.gamma if variant == "relinear_full" else 1.0
                    plan.append(("collapse", dict(
                        variant=variant, lr=lr, batch_norm=batch_norm,
                        seed=seed, gamma=gamma)))
        gammas = (0.0, 1e-2, 1.0) if args.quick else GAMMAS
        for gamma in gammas:
            plan.append(("gamma", dict(
                variant="relinear_full", lr=args.transition_lr,
                batch_norm=True, seed=seed, gamma=gamma)))
        for reg in (REGULARIZERS[-1:] if args.quick else REGULARIZERS):
            plan.append(("regularizer", dict(
                variant="relinear_full", lr=args.transition_lr,
                batch_norm=True, seed=seed, gamma=1.0, regularization=reg)))
    print(f"{len(plan)} runs on {keras.backend.backend()}, data: "
          f"{'cifar10 ' + args.train_split if args.data_dir else 'digits'}")
    rows = []
    start = time.perf_counter()
    progress = keras.utils.Progbar(len(plan), stateful_metrics=["accuracy"])
    for i, (study, kwargs) in enumerate(plan, start=1):
        row = dict(study=study, **run(data, args, **kwargs))
        rows.append(row)
        progress.update(i, [("accuracy", row["test_accuracy"])])
    regularizer_rows = [r for r in rows if r["study"] == "gamma"
                        and r["gamma"] == 1.0]
    rows += [dict(r, study="regularizer", regularization=0.0)
             for r in regularizer_rows]  # the 0 point of the sweep
    with open(os.path.join(args.output_dir, "runs.csv"), "w",
              newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_collapse(rows, os.path.join(args.output_dir, "collapse.png"))
    plot_transition(rows, os.path.join(args.output_dir, "transition.png"))
    print(summary_tables(rows))
    print(f"{len(rows)} rows in {time.perf_counter() - start:.0f} s")
    return rows


def summary_tables(rows):
    """Markdown tables: collapse counts and mean accuracy; the sweeps."""
    lines = ["| variant | batch norm | learning rate | collapsed | "
             "mean test accuracy |", "| --- | --- | --- | --- | --- |"]
    collapse = [r for r in rows if r["study"] == "collapse"]
    for variant in VARIANTS:
        for bn in (True, False):
            for lr in sorted({r["learning_rate"] for r in collapse}):
                sel = [r for r in collapse if r["variant"] == variant
                       and r["batch_norm"] == bn and r["learning_rate"] == lr]
                if sel:
                    lines.append(
                        f"| {variant} | {'yes' if bn else 'no'} | {lr:g} | "
                        f"{sum(r['collapsed'] for r in sel)}/{len(sel)} | "
                        f"{np.mean([r['test_accuracy'] for r in sel]):.3f} |")
    for study, key in (("gamma", "gamma"), ("regularizer", "regularization")):
        sel = [r for r in rows if r["study"] == study]
        if not sel:
            continue
        lines += ["", f"| {key} | mean test accuracy | relinear_gate | "
                  "relinear_square |", "| --- | --- | --- | --- |"]
        for x in sorted({r[key] for r in sel}):
            group = [r for r in sel if r[key] == x]
            lines.append(
                f"| {x:g} | "
                + " | ".join(f"{np.mean([r[m] for r in group]):.4f}" for m in
                             ("test_accuracy", "relinear_gate",
                              "relinear_square")) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
