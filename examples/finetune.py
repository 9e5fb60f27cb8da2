"""From a conventional ResNet to a quadratic one with keras_quadratic.quadratize.

Trains a conventional ResNet briefly (or loads a saved `.keras` model with
`--model`), converts it with `quadratize` (the quadratic terms start at their
ReLinear values, so the accuracy is unchanged), then continues training with
the ReLinear optimizer and reports the test accuracy after each epoch.

    KERAS_BACKEND=jax python examples/finetune.py              # downloads CIFAR-10 once
    KERAS_BACKEND=jax python examples/finetune.py --data-dir DIR  # a tfds data dir with it
"""

import argparse
import json
import os

from cifar10 import add_data_args
from cifar10 import load_splits
from cifar10 import pipeline


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_args(p)
    p.add_argument("--model", default=None,
                   help="a saved conventional .keras model to start from")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2,
                   help="epochs of training after the conversion")
    p.add_argument("--neuron", choices=("quadratic", "compact"),
                   default="quadratic")
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--gamma-g", type=float, default=1e-2)
    p.add_argument("--gamma-b", type=float, default=1e-2)
    p.add_argument("--output-dir", default="runs/finetune")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras

    import keras_quadratic as kq

    keras.utils.set_random_seed(args.seed)
    train, test, _ = load_splits(args)
    data_format = keras.config.image_data_format()
    train_ds = pipeline(train, args.batch_size, True, data_format, args.seed)
    test_ds = pipeline(test, args.batch_size, False, data_format, args.seed)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    if args.model:
        conventional = keras.saving.load_model(args.model)
    else:
        conventional = kq.models.QResNet(args.depth, neuron="linear")
        conventional.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss,
                             metrics=["accuracy"])
        print(f"Training {conventional.name} for {args.pretrain_epochs} "
              "epoch(s)")
        conventional.fit(train_ds, epochs=args.pretrain_epochs,
                         verbose=args.verbose, shuffle=False)
    _, before = conventional.evaluate(test_ds, verbose=0)

    model = kq.quadratize(conventional, neuron=args.neuron)
    model.compile(
        kq.optimizers.ReLinearOptimizer(
            keras.optimizers.SGD(args.learning_rate, momentum=0.9),
            gamma_g=args.gamma_g, gamma_b=args.gamma_b),
        loss, metrics=["accuracy"])
    _, after = model.evaluate(test_ds, verbose=0)
    print(f"test accuracy: conventional {before:.4f}, right after "
          f"quadratize {after:.4f}")
    history = model.fit(train_ds, validation_data=test_ds, epochs=args.epochs,
                        verbose=args.verbose, shuffle=False)
    per_epoch = [float(a) for a in history.history["val_accuracy"]]
    for epoch, accuracy in enumerate(per_epoch, start=1):
        print(f"epoch {epoch}: test accuracy {accuracy:.4f}")
    os.makedirs(args.output_dir, exist_ok=True)
    model.save(os.path.join(args.output_dir, "quadratized.keras"))
    summary = {
        "conventional_accuracy": float(before),
        "quadratized_accuracy": float(after),
        "accuracy_per_epoch": per_epoch,
        "conventional_params": int(conventional.count_params()),
        "quadratic_params": int(model.count_params()),
        "backend": keras.backend.backend(),
    }
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
