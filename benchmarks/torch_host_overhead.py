"""The host's share of a torch-backend training step, without a GPU: the
time of one `model.fit` step of keras-quadratic's QResNet against the plain
PyTorch reference's step (benchmarks/torch_reference.py) at sizes so tiny
(batch 2, 8x8 images, one thread) that the arithmetic costs next to
nothing and what is left is Python and dispatch. On a GPU that host time
is what leaves the device idle between kernels; a CUDA graph
(kq.callbacks.CUDAGraphTrainStep) removes it there, so this figure shows
the eager path's progress.

    python benchmarks/torch_host_overhead.py

prints the median milliseconds per step of each, their ratio, and the
torch operators each step calls (counted by torch.profiler: a figure that
does not vary from run to run; each is at least one kernel on a GPU). It
runs on the torch backend whatever KERAS_BACKEND says.
"""

import argparse
import json
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def keras_step(depth, neuron, batch, size):
    """One `model.fit` training step (its train function) on a batch."""
    import keras
    import numpy as np

    import keras_quadratic as kq

    keras.utils.set_random_seed(0)
    model = kq.models.QResNet(depth, neuron, input_shape=(size, size, 3))
    optimizer = kq.optimizers.PyTorchSGD(0.01, momentum=0.9,
                                         weight_decay=1e-4)
    if neuron != "linear":
        optimizer = kq.optimizers.ReLinearOptimizer(optimizer)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, (batch,)).astype("int32")
    # fit's own loop, one step: the train function, as fit calls it
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    data = [tuple(keras.ops.convert_to_tensor(a) for a in (x, y))]
    return lambda: model.train_function(data)


def operators_per_step(step):
    """The torch operators (`aten::` calls, outermost only: those a step
    dispatches itself) of one call of `step`."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        step()
    events = [e for e in trace.events() if e.name.startswith("aten::")]
    # an operator called inside another's interval is part of that one
    events.sort(key=lambda e: (e.time_range.start, -e.time_range.end))
    count, end = 0, -1
    for event in events:
        if event.time_range.start >= end:
            count += 1
            end = event.time_range.end
    return count


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    from common import time_steps
    from torch_reference import training_step

    torch.set_num_threads(args.threads)
    rows = []
    for neuron in ("quadratic", "linear"):
        reference, _ = training_step(args.depth, neuron, args.batch,
                                     image_size=args.size)
        step = keras_step(args.depth, neuron, args.batch, args.size)
        keras_ms = 1000 * time_steps(step, steps=args.steps)
        torch_ms = 1000 * time_steps(reference, steps=args.steps)
        keras_ops = operators_per_step(step)
        torch_ops = operators_per_step(reference)
        rows.append({"model": f"{'Q' if neuron == 'quadratic' else ''}"
                     f"ResNet{args.depth}", "batch": args.batch,
                     "image_size": args.size, "threads": args.threads,
                     "keras_ms": round(keras_ms, 2),
                     "torch_ms": round(torch_ms, 2),
                     "ratio": round(keras_ms / torch_ms, 2),
                     "keras_operators": keras_ops,
                     "torch_operators": torch_ops})
        print(f"{rows[-1]['model']}: torch backend {keras_ms:.1f} ms/step "
              f"({keras_ops} operators), plain PyTorch {torch_ms:.1f} "
              f"ms/step ({torch_ops}): {keras_ms / torch_ms:.2f}x",
              flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
