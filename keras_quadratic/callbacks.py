"""QuadraticMonitor: how far each quadratic layer has moved from linear.

For a set of quadratic layers, with b_g's reference point 1:

    relinear_gate   = sqrt(sum ||gate_kernel||^2 + ||gate_bias - 1||^2)
                      / sqrt(sum ||kernel||^2 + ||bias||^2)
    relinear_square = sqrt(sum ||square_kernel||^2 + ||square_bias||^2)
                      / sqrt(sum ||kernel||^2 + ||bias||^2)

Both are 0 at the ReLinear initialization (a conventional network).
"""

import numpy as np

import keras

from keras_quadratic.cuda_graph import CUDAGraphTrainStep  # noqa: F401
from keras_quadratic.groups import quadratic_layer_of


def quadratic_layers(model):
    """The quadratic layers of `model` at any nesting (nested models, custom
    layers holding them), in the order of `model.weights`: found through
    the quadratic weights they created, as the ReLinear optimizer finds
    them."""
    found = []
    for variable in model.weights:
        layer = quadratic_layer_of(variable)
        if layer is not None and layer not in found:
            found.append(layer)
    return found


def _squared_norm(variable, reference=0.0):
    if variable is None:
        return 0.0
    value = np.asarray(keras.ops.convert_to_numpy(variable), np.float64)
    return float(np.sum((value - reference) ** 2))


def layer_paths(model):
    """{id(layer): "outer/inner/name"} for every layer nested in `model`
    (nested models, custom layers holding layers), the path of names from
    `model` down, which tells apart same-named layers of different nested
    models. A layer reachable twice keeps its first path."""
    paths = {}

    def walk(layer, prefix):
        # (Keras has no public list of a layer's direct sublayers)
        for child in layer._flatten_layers(include_self=False,
                                           recursive=False):
            if id(child) not in paths:
                paths[id(child)] = f"{prefix}{child.name}"
                walk(child, f"{prefix}{child.name}/")

    walk(model, "")
    return paths


def layer_norms(layer):
    """(linear, gate, square) squared norms of one quadratic layer."""
    linear = _squared_norm(layer.kernel) + _squared_norm(layer.bias)
    gate = _squared_norm(layer.gate_kernel) + _squared_norm(layer.gate_bias,
                                                            1.0)
    square = _squared_norm(layer.square_kernel) + _squared_norm(
        layer.square_bias)
    return linear, gate, square


def relinear_metrics(model, per_layer=True):
    """The monitor's values for `model` now, as a dict."""
    layers = quadratic_layers(model)
    paths = layer_paths(model) if per_layer else {}
    totals = np.zeros(3)
    metrics = {}
    for layer in layers:
        norms = np.array(layer_norms(layer))
        totals += norms
        if per_layer:
            path = paths.get(id(layer), layer.name)
            denominator = np.sqrt(norms[0]) or 1.0
            if not layer.compact:  # the compact neuron has no gate
                metrics[f"relinear_gate/{path}"] = float(
                    np.sqrt(norms[1]) / denominator)
            metrics[f"relinear_square/{path}"] = float(
                np.sqrt(norms[2]) / denominator)
    denominator = np.sqrt(totals[0]) or 1.0
    metrics["relinear_gate"] = float(np.sqrt(totals[1]) / denominator)
    metrics["relinear_square"] = float(np.sqrt(totals[2]) / denominator)
    return metrics


class QuadraticMonitor(keras.callbacks.Callback):
    """Logs how far the quadratic layers have moved from conventional ones.

    At the end of each epoch it adds to the logs, over all quadratic layers
    of the model (at any nesting), with `gate_bias`'s conventional value 1:

        relinear_gate   = sqrt(sum ||gate_kernel||^2 + ||gate_bias - 1||^2)
                          / sqrt(sum ||kernel||^2 + ||bias||^2)
        relinear_square = sqrt(sum ||square_kernel||^2 + ||square_bias||^2)
                          / sqrt(sum ||kernel||^2 + ||bias||^2)

    Both are 0 at the ReLinear initialization (a conventional network) and
    grow as the quadratic terms are used. With `per_layer=True` it also
    logs `relinear_gate/<layer path>` and `relinear_square/<layer path>`
    for each layer, the path being the names from the model down (`q` in a
    flat model, `block1/q` for the `q` of a nested model `block1`). The values reach `History`, `CSVLogger` and
    `TensorBoard` like any metric (put the monitor before those callbacks),
    and `history` keeps them, with the values before training as epoch -1.

    Args:
        per_layer: bool, also log the values of each layer (default True).
        plot_path: a path, or None (default). If set, a PNG of the
            per-layer values against the epoch is written there at the end
            of training (see `plot`); the user's matplotlib state is left
            alone.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_quadratic as kq
    >>> model = keras.Sequential([keras.Input((4,)), kq.QuadraticDense(8),
    ...                           keras.layers.Dense(1)])
    >>> model.compile(kq.optimizers.ReLinearOptimizer(
    ...     keras.optimizers.SGD(0.1), gamma_g=0.5, gamma_b=0.5), "mse")
    >>> monitor = kq.callbacks.QuadraticMonitor()
    >>> x, y = np.random.rand(32, 4), np.random.rand(32, 1)
    >>> history = model.fit(x, y, epochs=2, callbacks=[monitor], verbose=0)
    >>> history.history["relinear_gate"][-1] > 0
    True
    """

    def __init__(self, per_layer=True, plot_path=None):
        super().__init__()
        self.per_layer = per_layer
        self.plot_path = plot_path
        self.history = []

    def on_train_begin(self, logs=None):
        self.history = [dict(epoch=-1, **relinear_metrics(self.model,
                                                          self.per_layer))]

    def on_epoch_end(self, epoch, logs=None):
        metrics = relinear_metrics(self.model, self.per_layer)
        self.history.append(dict(epoch=epoch, **metrics))
        if logs is not None:
            logs.update(metrics)

    def on_train_end(self, logs=None):
        if self.plot_path:
            self.plot(self.plot_path)

    def plot(self, path):
        """Saves a PNG: per-layer relinear_gate and relinear_square (and the
        model's overall values, dashed) against the epoch."""
        # A Figure of its own: the user's pyplot state and backend stay
        # as they are (no matplotlib.use, no pyplot).
        from matplotlib import colormaps
        from matplotlib.figure import Figure

        epochs = [h["epoch"] + 1 for h in self.history]
        fig = Figure(figsize=(11, 4))
        axes = fig.subplots(1, 2, sharex=True)
        for ax, group in zip(axes, ("relinear_gate", "relinear_square")):
            keys = sorted({k for h in self.history for k in h
                           if k.startswith(group + "/")})
            cmap = colormaps["viridis"].resampled(max(len(keys), 1))
            for i, key in enumerate(keys):
                ax.plot(epochs, [h.get(key, np.nan) for h in self.history],
                        color=cmap(i), lw=1,
                        label=key.split("/", 1)[1] if len(keys) <= 12
                        else None)
            ax.plot(epochs, [h[group] for h in self.history], "k--", lw=2,
                    label="all layers")
            ax.set_title(group)
            ax.set_xlabel("epoch (0 = before training)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
