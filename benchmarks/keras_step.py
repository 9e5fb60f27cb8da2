"""Times model.fit's compiled training step of a Keras QResNet on the
current backend (KERAS_BACKEND), on synthetic CIFAR-shaped data.

    KERAS_BACKEND=jax python benchmarks/keras_step.py --depth 20 --neuron quadratic
prints one JSON line with the median step time.
"""

import argparse
import json

import numpy as np

from common import peak_rss_mb
from common import time_steps


def _device_peak_mb():
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "gpu":
            stats = device.memory_stats() or {}
            return stats.get("peak_bytes_in_use", 0) / 2**20
    return None


def benchmark(depth, neuron, batch, steps, dtype="float32",
              jit_compile="auto", data_format="channels_last"):
    import keras

    import keras_quadratic as kq

    if dtype == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    shape = (32, 32, 3) if data_format == "channels_last" else (3, 32, 32)
    model = kq.models.QResNet(depth, neuron, input_shape=shape,
                              data_format=data_format)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-4)
    if neuron != "linear":
        optimizer = kq.optimizers.ReLinearOptimizer(optimizer)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype("float32")
    y = rng.integers(0, 10, (batch,)).astype("int32")
    # train_on_batch runs the same compiled train function as fit(); the
    # returned loss is a host value, so each call waits for its step.
    seconds = time_steps(lambda: model.train_on_batch(x, y), steps=steps)
    device_memory = _device_peak_mb()
    return {
        "backend": keras.backend.backend(), "depth": depth, "neuron": neuron,
        "batch": batch, "dtype": dtype, "seconds": seconds,
        "peak_memory_mb": device_memory or peak_rss_mb(),
        "device": "gpu" if device_memory else "cpu",
        "params": model.count_params(), "jit_compile": str(jit_compile),
        "data_format": data_format,
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--neuron", choices=("quadratic", "compact", "linear"),
                   default="quadratic")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", choices=("float32", "bfloat16"),
                   default="float32")
    p.add_argument("--jit-compile", choices=("auto", "true", "false"),
                   default="auto")
    p.add_argument("--data-format", default="channels_last",
                   choices=("channels_last", "channels_first"))
    a = p.parse_args()
    jit = {"auto": "auto", "true": True, "false": False}[a.jit_compile]
    print(json.dumps(benchmark(a.depth, a.neuron, a.batch, a.steps,
                               a.dtype, jit, a.data_format)))
