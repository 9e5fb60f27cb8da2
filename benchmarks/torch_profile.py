"""Where the GPU time of one training step goes on the torch backend:
keras-quadratic's QResNet (the eager step: a CUDA graph replays the same
kernels) against the plain PyTorch reference (benchmarks/torch_reference.py,
channels_last), kernel by kernel, with torch.profiler.

    KERAS_BACKEND=torch python benchmarks/torch_profile.py --dtype float32

prints, for each runner, the GPU milliseconds per step and the kernels
that take the most of it.
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def keras_step(depth, neuron, batch, dtype, data_format):
    import keras

    import keras_quadratic as kq

    keras.config.set_dtype_policy(
        "mixed_bfloat16" if dtype == "bfloat16" else "float32")
    keras.utils.set_random_seed(0)
    shape = (32, 32, 3) if data_format == "channels_last" else (3, 32, 32)
    model = kq.models.QResNet(depth, neuron, input_shape=shape,
                              data_format=data_format)
    keras.config.set_dtype_policy("float32")
    optimizer = kq.optimizers.PyTorchSGD(0.01, momentum=0.9)
    if neuron != "linear":
        optimizer = kq.optimizers.ReLinearOptimizer(optimizer)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(
        rng.standard_normal((batch, *shape)).astype("float32"))
    y = keras.ops.convert_to_tensor(rng.integers(0, 10, (batch,)), "int32")
    return lambda: model.train_on_batch(x, y)


def profile(step, steps, top):
    import torch
    from torch.profiler import ProfilerActivity

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages()
              if getattr(e, "device_time_total", 0) > 0]
    events.sort(key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in events) / steps / 1000
    print(f"  GPU time per step: {total:.2f} ms in "
          f"{sum(e.count for e in events) / steps:.0f} kernels")
    for e in events[:top]:
        ms = e.device_time_total / steps / 1000
        print(f"  {ms:7.3f} ms {e.count // steps:5d}x  {e.key[:100]}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--neuron", default="quadratic",
                   choices=("quadratic", "linear"))
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--dtype", default="float32",
                   choices=("float32", "bfloat16"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    import torch

    sys.path.insert(0, HERE)
    from torch_reference import training_step

    torch.backends.cudnn.benchmark = True
    for data_format in ("channels_last", "channels_first"):
        print(f"keras-quadratic, torch backend, {data_format}, "
              f"{args.neuron} depth {args.depth}, batch {args.batch}, "
              f"{args.dtype}:")
        profile(keras_step(args.depth, args.neuron, args.batch, args.dtype,
                           data_format), args.steps, args.top)
    print(f"PyTorch reference, channels_last, batch {args.batch}, "
          f"{args.dtype}:")
    step, _ = training_step(args.depth, args.neuron, args.batch, args.dtype,
                            "cuda", channels_last=True)
    profile(step, args.steps, args.top)


if __name__ == "__main__":
    main()
