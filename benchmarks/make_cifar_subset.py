"""A CIFAR-10 subset as uint8 arrays in one .npz, for benchmarks/gpu.sh and
benchmarks/cifar10_grid.py on a machine without TensorFlow or network
(about 37 MB for the defaults, 184 MB for the whole set).

    python benchmarks/make_cifar_subset.py --data-dir DIR --output .gpu-data/cifar10_subset.npz
    python benchmarks/make_cifar_subset.py --data-dir DIR --train 50000 \
        --test 10000 --output .gpu-data/cifar10.npz --part-mib 60

DIR is a tfds data dir where cifar10 is prepared. `--part-mib N` also cuts
the file into parts of at most N MiB (`.part0`, `.part1`, ...) and writes
its SHA-256 (`.sha256`), for a machine that can receive only so much at a
time; benchmarks/common.py's `load_npz` joins and checks them there.
"""

import argparse
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--train", type=int, default=10_000)
    p.add_argument("--test", type=int, default=2_000)
    p.add_argument("--output", default=".gpu-data/cifar10_subset.npz")
    p.add_argument("--part-mib", type=float, default=None,
                   help="also cut the file into parts of at most this many "
                   "MiB, with its SHA-256")
    args = p.parse_args(argv)
    if args.part_mib is not None and not args.part_mib >= 1:
        p.error(f"--part-mib must be at least 1, not {args.part_mib}")
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
    if args.part_mib:
        write_parts(args.output, int(args.part_mib * 2**20))


def write_parts(path, part_bytes):
    """`path` as parts of at most `part_bytes` and its SHA-256."""
    with open(path, "rb") as f:
        data = f.read()
    count = -(-len(data) // part_bytes)
    for i in range(count):
        with open(f"{path}.part{i}", "wb") as f:
            f.write(data[i * part_bytes:(i + 1) * part_bytes])
    stale = count  # an earlier cut's further parts would be joined too
    while os.path.exists(f"{path}.part{stale}"):
        os.remove(f"{path}.part{stale}")
        stale += 1
    with open(f"{path}.sha256", "w") as f:
        f.write(f"{hashlib.sha256(data).hexdigest()}  "
                f"{os.path.basename(path)}\n")
    print(f"wrote {count} parts of at most "
          f"{part_bytes / 2**20:.0f} MiB and {path}.sha256")


if __name__ == "__main__":
    main()
