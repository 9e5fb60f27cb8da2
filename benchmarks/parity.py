"""Accuracy parity with the original code: the plain PyTorch reference
(benchmarks/torch_reference.py: the original network, its parameter groups
with the quadratic weights at lr * gamma, torch.optim.SGD's coupled weight
decay on every parameter, as the original) and keras-quadratic
(examples/cifar10.py with its defaults) trained on the same short recipe,
on the same data pipeline (tf.data: random crop of the 4-pixel zero-padded
image, horizontal flip, per-channel normalization), side by side.

    python benchmarks/parity.py --data-dir DIR --epochs 3 --backend tensorflow

Recipe: SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by
10 at 50% and 75% of the epochs, gamma 1e-2 for both quadratic groups,
seed 0; the final epoch's test accuracy is reported for each. Prints a
table and writes runs/parity/parity.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "examples"))


def torch_run(args, neuron):
    """Trains the PyTorch reference; final-epoch test accuracy."""
    import numpy as np
    import tensorflow as tf
    import torch
    import torch.nn.functional as F

    import cifar10
    from torch_reference import ResNet

    tf.config.set_visible_devices([], "GPU")
    tf.random.set_seed(args.seed)
    torch.manual_seed(args.seed)
    data = argparse.Namespace(
        dataset="cifar10", data_dir=args.data_dir, download=False,
        train_split=args.train_split, test_split=args.test_split,
        mock_data=args.mock_data, mock_examples=256)
    train, test, size = cifar10.load_splits(data)
    train_ds = cifar10.pipeline(train, args.batch_size, True,
                                "channels_first", args.seed)
    test_ds = cifar10.pipeline(test, args.batch_size, False,
                               "channels_first", args.seed)
    model = ResNet(args.depth, neuron)
    quadratic = {"g": [], "b": []}
    linear = []
    for module in model.modules():  # by module type, not by name
        if hasattr(module, "conv_g"):
            quadratic["g"] += list(module.conv_g.parameters())
            quadratic["b"] += list(module.conv_b.parameters())
    quadratic_ids = {id(p) for group in quadratic.values() for p in group}
    linear = [p for p in model.parameters() if id(p) not in quadratic_ids]
    groups = [{"params": linear}]
    if quadratic["g"]:
        groups += [{"params": quadratic["g"], "lr": args.lr * args.gamma},
                   {"params": quadratic["b"], "lr": args.lr * args.gamma}]
    optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=0.9,
                                weight_decay=args.weight_decay)
    milestones = [int(args.epochs * f) for f in (0.5, 0.75)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones,
                                                     0.1)
    accuracies = []
    for epoch in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for x, y in train_ds:
            x = torch.from_numpy(x.numpy())
            y = torch.from_numpy(y.numpy().astype(np.int64))
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in test_ds:
                logits = model(torch.from_numpy(x.numpy()))
                correct += int((logits.argmax(1).numpy() == y.numpy()).sum())
                total += len(y)
        accuracies.append(correct / total)
        print(f"pytorch-reference {neuron} epoch {epoch + 1}: test accuracy "
              f"{accuracies[-1]:.4f} ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr, flush=True)  # progress; stdout has the result
    return accuracies


def keras_run(args, neuron):
    """examples/cifar10.py with the recipe's flags; its summary."""
    out = os.path.join(args.output_dir, f"keras-{args.backend}-{neuron}")
    command = [
        sys.executable, os.path.join(ROOT, "examples", "cifar10.py"),
        "--depth", str(args.depth), "--neuron", neuron,
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--learning-rate", str(args.lr), "--weight-decay",
        str(args.weight_decay), "--gamma-g", str(args.gamma), "--gamma-b",
        str(args.gamma), "--train-split", args.train_split, "--test-split",
        args.test_split, "--seed", str(args.seed), "--output-dir", out,
        "--verbose", "2"]
    command += ["--mock-data"] if args.mock_data else [
        "--data-dir", args.data_dir]
    env = dict(os.environ, KERAS_BACKEND=args.backend)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, env.get("PYTHONPATH")) if p)
    subprocess.run(command, check=True, env=env)
    with open(os.path.join(out, "log.csv")) as f:
        import csv

        return [float(r["val_accuracy"]) for r in csv.DictReader(f)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--mock-data", action="store_true")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--gamma", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="tensorflow",
                   choices=("tensorflow", "jax", "torch"))
    p.add_argument("--neurons", nargs="+", default=["quadratic", "linear"],
                   choices=("quadratic", "linear"))
    p.add_argument("--output-dir", default=os.path.join("runs", "parity"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:  # the PyTorch run, in a process of its own
        print(json.dumps(torch_run(args, args.worker)))
        return
    os.makedirs(args.output_dir, exist_ok=True)
    results = []
    for neuron in args.neurons:
        worker = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", neuron,
             *(argv if argv is not None else sys.argv[1:])],
            check=True, stdout=subprocess.PIPE, text=True)
        reference = json.loads(worker.stdout.strip().splitlines()[-1])
        ours = keras_run(args, neuron)
        results.append({"neuron": neuron, "pytorch_reference": reference,
                        "keras_quadratic": ours})
    name = lambda n: ("Q" if n == "quadratic" else "") + f"ResNet{args.depth}"  # noqa
    print(f"\n{args.epochs} epochs, {args.train_split} / {args.test_split}, "
          f"seed {args.seed}; final-epoch test accuracy\n")
    print(f"| model | PyTorch reference | keras-quadratic ({args.backend}) | "
          "difference (points) |")
    print("| --- | ---: | ---: | ---: |")
    for r in results:
        ref, ours = r["pytorch_reference"][-1], r["keras_quadratic"][-1]
        print(f"| {name(r['neuron'])} | {100 * ref:.2f} | {100 * ours:.2f} | "
              f"{100 * (ours - ref):+.2f} |")
    with open(os.path.join(args.output_dir, "parity.json"), "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
