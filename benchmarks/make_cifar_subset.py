"""A CIFAR-10 subset as uint8 arrays in one .npz, for benchmarks/gpu.sh on a
machine without TensorFlow or network (about 37 MB for the defaults).

    python benchmarks/make_cifar_subset.py --data-dir DIR --output .gpu-data/cifar10_subset.npz

DIR is a tfds data dir where cifar10 is prepared.
"""

import argparse
import os

import numpy as np
import tensorflow_datasets as tfds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--train", type=int, default=10_000)
    p.add_argument("--test", type=int, default=2_000)
    p.add_argument("--output", default=".gpu-data/cifar10_subset.npz")
    args = p.parse_args(argv)
    arrays = {}
    for split, n in (("train", args.train), ("test", args.test)):
        x, y = tfds.as_numpy(tfds.load(
            "cifar10", split=f"{split}[:{n}]", data_dir=args.data_dir,
            download=False, as_supervised=True, batch_size=-1))
        arrays[f"x_{split}"] = x.astype(np.uint8)
        arrays[f"y_{split}"] = y.astype(np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    np.savez(args.output, **arrays)
    print(f"wrote {args.output}: {os.path.getsize(args.output) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
