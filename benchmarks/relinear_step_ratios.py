"""Measures the ReLinear optimizer's step ratios on the current backend.

For SGD, SGD with momentum, Adam and AdamW: one `fit` step of a small
quadratic model from the same weights, wrapped (gamma_g 0.1, gamma_b 0.01)
and unwrapped (weight decay excluded from the quadratic weights, as the
wrapper does); prints, per variable group, the step of the wrapped optimizer
projected on the unwrapped one (0.1, 0.01 and 1 expected).

    KERAS_BACKEND=jax python benchmarks/relinear_step_ratios.py
"""

import keras
import numpy as np

import keras_quadratic as kq

OPTIMIZERS = {
    "SGD": lambda: keras.optimizers.SGD(0.05),
    "SGD momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "Adam": lambda: keras.optimizers.Adam(1e-2),
    "AdamW": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
}


def model():
    keras.utils.set_random_seed(0)
    nonzero = keras.initializers.RandomNormal(0.0, 0.1)
    inputs = keras.Input((6, 6, 2))
    h = kq.QuadraticConv2D(3, 3, activation="relu",
                           gate_kernel_initializer=nonzero,
                           square_kernel_initializer=nonzero)(inputs)
    return keras.Model(inputs, kq.QuadraticDense(2)(keras.layers.Flatten()(h)))


def steps(optimizer, weights, x, y):
    m = model()
    m.set_weights(weights)
    m.compile(optimizer, "mse")
    m.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    return [(w.path.split("/")[-1],
             keras.ops.convert_to_numpy(w) - start)
            for w, start in zip(m.weights, weights)]


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6, 6, 2)).astype("float32")
    y = rng.standard_normal((16, 2)).astype("float32")
    print("| backend | optimizer | gate (0.1) | square (0.01) | linear (1) |")
    print("| --- | --- | --- | --- | --- |")
    for name, make in OPTIMIZERS.items():
        weights = model().get_weights()
        reference = make()
        reference.exclude_from_weight_decay(var_names=["gate_", "square_"])
        plain = steps(reference, weights, x, y)
        wrapped = steps(kq.optimizers.ReLinearOptimizer(make(), 0.1, 0.01), weights,
                        x, y)
        ratios = {"gate": [], "square": [], "linear": []}
        for (weight, p), (_, q) in zip(plain, wrapped):
            group = weight.split("_")[0] if "_" in weight else "linear"
            ratios[group].append(float(np.sum(p * q) / np.sum(p * p)))
        print(f"| {keras.backend.backend()} | {name} | "
              + " | ".join(f"{np.mean(ratios[g]):.5f}"
                           for g in ("gate", "square", "linear")) + " |")


if __name__ == "__main__":
    main()
