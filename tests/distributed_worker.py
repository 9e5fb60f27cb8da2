"""One process of a multi-process test (tests/test_distributed.py): set up
by kq.distribute.data_parallel() from the environment, it

1. records the ids of the examples Keras gives this process from each
   global batch (the sharding `fit` uses);
2. quadratizes a small conventional model, then trains it one step with
   ReLinearOptimizer and, from the same weights, one step with plain SGD,
   and takes the ratio of the two steps for each weight;
3. trains a few more steps with QuadraticMonitor;
4. before any seed is set, draws an unseeded layer's initial weights
   (the processes must agree on them, as Keras's own initialize makes
   them do),

and writes what it saw, the ratios, the monitor's values and its final
weights to OUTPUT (an .npz), for the test to compare across processes.

    python tests/distributed_worker.py OUTPUT [--keras-initializes]

With --keras-initializes (JAX), the process starts JAX's runtime itself
with `keras.distribution.initialize()` before calling `data_parallel`,
which must then take the topology from JAX.
"""

import sys

import keras_quadratic as kq

if "--keras-initializes" in sys.argv[2:]:
    import jax
    import keras

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize()
topology = kq.distribute.data_parallel(timeout=60)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH, BATCHES, GAMMA_G, GAMMA_B, LR = 8, 4, 0.25, 0.5, 0.1


def dataset():
    """(image, label) with the example's id written in its first pixel."""
    rng = np.random.default_rng(0)
    n = GLOBAL_BATCH * BATCHES
    x = rng.standard_normal((n, 6, 6, 2)).astype("float32")
    x[:, 0, 0, 0] = np.arange(n)
    y = rng.integers(0, 3, n).astype("int64")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(
        GLOBAL_BATCH, drop_remainder=True)


def local_ids():
    """The example ids this process is given, global batch by global
    batch, as `fit` shards the dataset."""
    if topology.strategy is not None:
        distributed = topology.strategy.experimental_distribute_dataset(
            dataset())
        ids = []
        for x, _ in distributed:
            for part in topology.strategy.experimental_local_results(x):
                ids.extend(part.numpy()[:, 0, 0, 0].astype(int).tolist())
        return ids
    distribution = keras.distribution.distribution()
    local = distribution.distribute_dataset(dataset())
    return [int(i) for x, _ in local for i in x.numpy()[:, 0, 0, 0]]


def conventional():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, activation="tanh")(inputs)
    h = keras.layers.DepthwiseConv2D(3)(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def one_step(gammas, weights):
    with topology.scope():
        model = kq.quadratize(conventional())
        model.set_weights(weights)
        optimizer = keras.optimizers.SGD(LR)
        if gammas is not None:
            optimizer = kq.optimizers.ReLinearOptimizer(optimizer, *gammas)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        model.fit(dataset().take(1), epochs=1, verbose=0)
    return model


def unseeded_kernel():
    """An unseeded layer's initial kernel, drawn before any seed is set."""
    with topology.scope():
        layer = keras.layers.Dense(4)
        layer.build((None, 3))
    return keras.ops.convert_to_numpy(layer.kernel)


def main(output):
    unseeded = unseeded_kernel()
    ids = local_ids()
    with topology.scope():
        start = kq.quadratize(conventional())
    # non-zero quadratic weights, so that every weight has a gradient
    weights = [w + 0.1 * np.random.default_rng(i).standard_normal(w.shape)
               .astype("float32") for i, w in enumerate(start.get_weights())]
    plain = one_step(None, weights)
    relinear = one_step((GAMMA_G, GAMMA_B), weights)
    ratios = {}
    for w0, p, r in zip(weights, plain.weights, relinear.weights):
        step_plain = keras.ops.convert_to_numpy(p) - w0
        step = keras.ops.convert_to_numpy(r) - w0
        group = kq.layers.quadratic_group(r) or "linear"
        ratios.setdefault(group, []).append(
            float(np.sum(step * step_plain) / np.sum(step_plain ** 2)))
    monitor = kq.callbacks.QuadraticMonitor()
    history = relinear.fit(dataset(), epochs=2, verbose=0,
                           callbacks=[monitor])
    np.savez(
        output, ids=np.array(ids), process_id=topology.process_id,
        processes=topology.processes, devices=topology.devices,
        gate_ratio=ratios["gate"], square_ratio=ratios["square"],
        linear_ratio=ratios["linear"],
        relinear_gate=history.history["relinear_gate"], unseeded=unseeded,
        **{f"weight{i}": keras.ops.convert_to_numpy(w)
           for i, w in enumerate(relinear.weights)})


if __name__ == "__main__":
    main(sys.argv[1])
