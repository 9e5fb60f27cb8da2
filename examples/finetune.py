"""Warm start with keras_quadratic.quadratize, against its control.

1. Trains a conventional network briefly: by default a small MobileNet-style
   CIFAR network of depthwise-separable blocks (`--architecture
   depthwise`), or a ResNet (`resnet`), or loads a saved `.keras` model
   (`--model`).
2. The control: a copy of it fine-tuned for `--epochs` with the optimizer
   below, unchanged.
3. The quadratic model: `quadratize` (`--quadratize depthwise`, the
   default for a model with depthwise convolutions: only those; `all`, the
   default otherwise: every Conv/Dense too), whose test accuracy right
   after the conversion equals the conventional one, fine-tuned for the
   same epochs with the same optimizer (ReLinearOptimizer over SGD with
   momentum; on the control, which has no quadratic weights, that is plain
   SGD), the same seed and the same batches (order, crops and flips).

It prints the final-epoch test accuracies of both side by side and writes
`summary.json`, `curves.png` (test accuracy per epoch, control and
quadratic) and `relinear.png` (how quadratic each layer became) to
`--output-dir`.

    KERAS_BACKEND=jax python examples/finetune.py              # downloads CIFAR-10 once
    KERAS_BACKEND=jax python examples/finetune.py --data-dir DIR  # a tfds data dir with it
"""

import argparse
import json
import os

from keras_quadratic.cifar import NUM_CLASSES
from keras_quadratic.cifar import add_data_args
from keras_quadratic.cifar import in_memory
from keras_quadratic.cifar import load_splits
from keras_quadratic.cifar import steps_per_epoch
from keras_quadratic.cifar import test_pipeline
from keras_quadratic.cifar import training_pipeline


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]))
    add_data_args(p)
    p.add_argument("--model", default=None,
                   help="a saved conventional .keras model to start from "
                   "(instead of training one)")
    p.add_argument("--architecture", choices=("depthwise", "resnet"),
                   default="depthwise",
                   help="the conventional network trained first: depthwise "
                   "(default), MobileNet-style blocks of DepthwiseConv2D + "
                   "1x1 Conv2D; resnet, ResNet-(--depth)")
    p.add_argument("--width", type=int, default=32,
                   help="channels of the depthwise network's first block")
    p.add_argument("--depth", type=int, default=20,
                   help="depth of --architecture resnet (6n+2)")
    p.add_argument("--pretrain-epochs", type=int, default=5)
    p.add_argument("--pretrain-learning-rate", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=3,
                   help="fine-tuning epochs, control and quadratic alike")
    p.add_argument("--quadratize", choices=("depthwise", "all"),
                   default=None,
                   help="which layers become quadratic: depthwise, the "
                   "depthwise (and separable) convolutions only, where the "
                   "quadratic terms cost a few weights; all, every "
                   "convolution and Dense layer. Default: depthwise if the "
                   "model has such layers, else all")
    p.add_argument("--neuron", choices=("quadratic", "compact"),
                   default="quadratic")
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--gamma-g", type=float, default=1e-2)
    p.add_argument("--gamma-b", type=float, default=1e-2)
    p.add_argument("--output-dir", default="runs/finetune")
    return p.parse_args(argv)


def depthwise_network(num_classes, width=32, data_format="channels_last"):
    """A MobileNet-style CIFAR network: a 3x3 stem, six blocks of
    DepthwiseConv2D 3x3 + BN + ReLU, Conv2D 1x1 + BN + ReLU (three of them
    halving the resolution), global average pooling, Dense."""
    import keras
    from keras import layers

    axis = -1 if data_format == "channels_last" else 1
    shape = (32, 32, 3) if data_format == "channels_last" else (3, 32, 32)
    inputs = keras.Input(shape)

    def bn_relu(x):
        return layers.ReLU()(layers.BatchNormalization(axis=axis)(x))

    x = bn_relu(layers.Conv2D(width, 3, padding="same", use_bias=False,
                              data_format=data_format)(inputs))
    for multiple, stride in ((1, 1), (2, 2), (2, 1), (4, 2), (4, 1), (8, 2)):
        x = bn_relu(layers.DepthwiseConv2D(
            3, strides=stride, padding="same", use_bias=False,
            data_format=data_format)(x))
        x = bn_relu(layers.Conv2D(width * multiple, 1, use_bias=False,
                                  data_format=data_format)(x))
    x = layers.GlobalAveragePooling2D(data_format=data_format)(x)
    return keras.Model(inputs, layers.Dense(num_classes)(x),
                       name=f"depthwise_net{width}")


def plot_accuracy(curves, conventional, png_path):
    """Test accuracy per fine-tuning epoch of each run, from the
    conventional model's (epoch 0), as a PNG (a Figure of its own)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for label, values in curves.items():
        ax.plot(range(len(values) + 1), [conventional] + values, marker="o",
                label=label)
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)


def main(argv=None):
    args = parse_args(argv)
    import keras

    import keras_quadratic as kq

    keras.utils.set_random_seed(args.seed)
    train, test, _ = load_splits(args)
    data_format = keras.config.image_data_format()
    test_ds = test_pipeline(test, args.batch_size, data_format)
    train = in_memory(train)
    steps = steps_per_epoch(train, args.batch_size)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def train_ds(epochs):
        # The same batches in the same order for every run: the control and
        # the quadratic models see the same shuffles and augmentations.
        return training_pipeline(train, args.batch_size, data_format,
                                 args.seed, epochs)

    if args.model:
        conventional = keras.saving.load_model(args.model)
    else:
        if args.architecture == "depthwise":
            conventional = depthwise_network(NUM_CLASSES[args.dataset],
                                             args.width, data_format)
        else:
            conventional = kq.models.QResNet(args.depth, neuron="linear")
        conventional.compile(
            keras.optimizers.SGD(args.pretrain_learning_rate,
                                 momentum=args.momentum),
            loss, metrics=["accuracy"])
        print(f"Training {conventional.name} for {args.pretrain_epochs} "
              "epoch(s)")
        conventional.fit(train_ds(args.pretrain_epochs),
                         epochs=args.pretrain_epochs, steps_per_epoch=steps,
                         verbose=args.verbose, shuffle=False)
    _, before = conventional.evaluate(test_ds, verbose=0)

    def optimizer():
        return kq.optimizers.ReLinearOptimizer(
            keras.optimizers.SGD(args.learning_rate, momentum=args.momentum),
            gamma_g=args.gamma_g, gamma_b=args.gamma_b)

    def fine_tune(model, callbacks=()):
        model.compile(optimizer(), loss, metrics=["accuracy"])
        history = model.fit(train_ds(args.epochs), validation_data=test_ds,
                            steps_per_epoch=steps,
                            epochs=args.epochs, verbose=args.verbose,
                            shuffle=False, callbacks=list(callbacks))
        return ([float(a) for a in history.history["val_accuracy"]],
                [float(a) for a in history.history["loss"]])

    control = keras.models.clone_model(conventional)
    control.set_weights(conventional.get_weights())
    print(f"Fine-tuning the control ({conventional.name}, unchanged) for "
          f"{args.epochs} epoch(s)")
    control_curve, control_loss = fine_tune(control)

    def depthwise(layer):
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
            # ConvNeXt's depthwise: one group per input channel
            return layer.groups > 1 and layer.kernel.shape[-2] == 1
        return isinstance(layer, (
            keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
            keras.layers.SeparableConv1D, keras.layers.SeparableConv2D))

    if args.quadratize is None:
        has_depthwise = any(depthwise(layer)
                            for layer in conventional.layers)
        args.quadratize = "depthwise" if has_depthwise else "all"
    model = kq.quadratize(
        conventional, neuron=args.neuron,
        layers=depthwise if args.quadratize == "depthwise" else None)
    print(f"quadratize ({args.quadratize}): "
          f"{len(kq.callbacks.quadratic_layers(model))} quadratic layers")
    model.compile(optimizer(), loss, metrics=["accuracy"])
    _, after = model.evaluate(test_ds, verbose=0)
    print(f"test accuracy: conventional {before:.4f}, right after "
          f"quadratize {after:.4f}")
    os.makedirs(args.output_dir, exist_ok=True)
    monitor = kq.callbacks.QuadraticMonitor(
        plot_path=os.path.join(args.output_dir, "relinear.png"))
    print(f"Fine-tuning the quadratic model for {args.epochs} epoch(s)")
    quadratic_curve, quadratic_loss = fine_tune(model, [monitor])

    print(f"\nfinal test accuracy after {args.epochs} fine-tuning epoch(s) "
          f"(conventional before: {before:.4f})")
    print(f"  control (conventional): {control_curve[-1]:.4f}  "
          f"({control.count_params():,} weights)")
    print(f"  quadratized:            {quadratic_curve[-1]:.4f}  "
          f"({model.count_params():,} weights)")
    model.save(os.path.join(args.output_dir, "quadratized.keras"))
    plot_accuracy({"control (conventional)": control_curve,
                   "quadratized": quadratic_curve}, float(before),
                  os.path.join(args.output_dir, "curves.png"))
    relinear = kq.callbacks.relinear_metrics(model, per_layer=False)
    summary = {
        "conventional_accuracy": float(before),
        "quadratized_accuracy": float(after),
        "control_accuracy_per_epoch": control_curve,
        "accuracy_per_epoch": quadratic_curve,
        "control_loss_per_epoch": control_loss,
        "loss_per_epoch": quadratic_loss,
        "control_final_accuracy": control_curve[-1],
        "quadratic_final_accuracy": quadratic_curve[-1],
        "conventional_params": int(conventional.count_params()),
        "quadratic_params": int(model.count_params()),
        "quadratic_layers": len(kq.callbacks.quadratic_layers(model)),
        "relinear_gate": relinear["relinear_gate"],
        "relinear_square": relinear["relinear_square"],
        "model": conventional.name,
        "quadratize": args.quadratize,
        "neuron": args.neuron,
        "epochs": args.epochs,
        "pretrain_epochs": 0 if args.model else args.pretrain_epochs,
        "seed": args.seed,
        "backend": keras.backend.backend(),
    }
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
