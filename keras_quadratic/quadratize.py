"""quadratize(): a trained conventional model as a ReLinear quadratic one.

Every selected Conv1D/2D/3D and Dense layer becomes its quadratic
counterpart with the same configuration, its `kernel` and `bias` copied and
its quadratic weights at the ReLinear initialization, so the new model
computes what the old one did; every other layer and weight is copied.
"""

import warnings

import keras

from keras_quadratic import layers as quadratic_layers

_COUNTERPARTS = {
    keras.layers.Conv1D: ("QuadraticConv1D", "CompactQuadraticConv1D"),
    keras.layers.Conv2D: ("QuadraticConv2D", "CompactQuadraticConv2D"),
    keras.layers.Conv3D: ("QuadraticConv3D", "CompactQuadraticConv3D"),
    keras.layers.Dense: ("QuadraticDense", "CompactQuadraticDense"),
}
# Every layer whose math is a linear map: the candidates for conversion
# (those without a counterpart above are kept and named in a warning).
_LINEAR_MAP_LAYERS = (
    keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose, keras.layers.EinsumDense,
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.Dense,
)
NEURONS = ("quadratic", "compact")
# The Keras layer's arguments that the quadratic layer takes as they are;
# the new layer's config is built from these alone.
_SHARED_ARGUMENTS = (
    "name", "trainable", "dtype", "activation", "use_bias",
    "kernel_initializer", "bias_initializer", "kernel_regularizer",
    "bias_regularizer", "activity_regularizer", "kernel_constraint",
    "bias_constraint",
)
_CONV_ARGUMENTS = ("filters", "kernel_size", "strides", "padding",
                   "data_format", "dilation_rate", "groups")
_DENSE_ARGUMENTS = ("units",)


def _arguments(layer):
    return _SHARED_ARGUMENTS + (
        _DENSE_ARGUMENTS if isinstance(layer, keras.layers.Dense)
        else _CONV_ARGUMENTS)


def _why_not(layer):
    """None if `layer` converts, else the reason it does not."""
    if type(layer) not in _COUNTERPARTS:
        return f"{type(layer).__name__} has no quadratic counterpart"
    if getattr(layer.dtype_policy, "quantization_mode", None):
        return (f"quantized ({layer.dtype_policy.quantization_mode}): "
                "convert the float model, then quantize")
    if getattr(layer, "lora_enabled", False):
        return "LoRA is enabled: merge or drop the adapter first"
    if getattr(layer, "dora_enabled", False):
        return "DoRA is enabled: merge or drop the adapter first"
    config = layer.get_config()
    if config.get("groups", 1) != 1:
        return f"grouped convolution (groups={config['groups']})"
    # Any other argument in use (a newer Keras's, say) would be lost.
    for key, value in config.items():
        if key not in _arguments(layer) and value not in (None, False):
            return (f"its argument {key}={value!r} has no quadratic "
                    "counterpart")
    return None


def _quadratic_layer(layer, neuron):
    config = layer.get_config()
    config = {key: config[key] for key in _arguments(layer) if key in config}
    full, compact = _COUNTERPARTS[type(layer)]
    cls = getattr(quadratic_layers, compact if neuron == "compact" else full)
    return cls.from_config(config)


def _is_functional(model):
    """Whether `model` is a Functional model (built by `keras.Model(inputs,
    outputs)`, keras.applications and many keras-hub models) whose layer
    graph `clone_model` can rebuild. Keras exports no Functional class, so
    it is recognised by name in the class hierarchy."""
    return isinstance(model, keras.Model) and any(
        cls.__name__ == "Functional" and cls.__module__.startswith("keras")
        for cls in type(model).__mro__)


def quadratize(model, neuron="quadratic", layers=None):
    """Returns a copy of `model` whose Conv/Dense layers are quadratic.

    ReLinear's conventional-model initialization: each converted layer keeps
    the original's `kernel` and `bias` as its linear part and gets the
    ReLinear initialization for the rest (`gate_kernel` 0, `gate_bias` 1,
    `square_kernel` 0, `square_bias` 0), so that

        QuadraticConv2D(x) = (conv(x, kernel) + bias) * (conv(x, 0) + 1)
                             + conv(x * x, 0) + 0 = Conv2D(x)

    and the new model's outputs equal the original's (to float32 rounding),
    in inference and training mode. Fine-tune it with
    `keras_quadratic.optimizers.ReLinearOptimizer` so that the quadratic
    terms grow slowly from there.

    Args:
        model: a built Sequential or Functional Keras model (nested models,
            shared layers and multiple inputs/outputs are fine).
        neuron: "quadratic" (full neuron, default) or "compact".
        layers: which layers to convert: None (default: every `Conv1D`,
            `Conv2D`, `Conv3D` and `Dense`), a list of layer names, or a
            predicate `f(layer) -> bool`.

    Returns:
        A new model; `model` is not modified. Layers that match the
        selection but cannot be converted (grouped, depthwise, separable or
        transposed convolutions, `EinsumDense`, quantized layers, layers
        with a LoRA or DoRA adapter or with an argument the quadratic layer
        does not take) are kept as they are and listed, with the reason, in
        a warning.

    Raises:
        ValueError: for a subclassed model (its layer graph cannot be
            rebuilt), an unbuilt model, or an unknown `neuron`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_quadratic as kq
    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...                           keras.layers.Conv2D(4, 3),
    ...                           keras.layers.Flatten(),
    ...                           keras.layers.Dense(2)])
    >>> quadratic = kq.quadratize(model)
    >>> [type(layer).__name__ for layer in quadratic.layers]
    ['QuadraticConv2D', 'Flatten', 'QuadraticDense']
    >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
    >>> bool(np.allclose(model.predict(x, verbose=0),
    ...                  quadratic.predict(x, verbose=0), atol=1e-5))
    True
    """
    if neuron not in NEURONS:
        raise ValueError(
            f"quadratize: argument `neuron` must be one of {NEURONS}. "
            f"Received: neuron={neuron!r}"
        )
    if not (isinstance(model, keras.Sequential) or _is_functional(model)):
        raise ValueError(
            "quadratize: supported models are Sequential and Functional "
            "ones (built with keras.Input), whose layer graph can be "
            f"rebuilt. Received a {type(model).__name__}; for a subclassed "
            "model, use the quadratic layers in its code instead."
        )
    if not model.built:
        raise ValueError("quadratize: the model must be built first.")
    if layers is None:
        selected = lambda layer: True  # noqa: E731
    elif callable(layers):
        selected = layers
    else:
        names = set(layers) if not isinstance(layers, str) else {layers}
        selected = lambda layer: layer.name in names  # noqa: E731

    pairs = []
    skipped = []

    def clone(layer):
        convert = (
            not isinstance(layer, keras.Model)
            and isinstance(layer, _LINEAR_MAP_LAYERS)
            and selected(layer)
        )
        reason = _why_not(layer) if convert else None
        if convert and reason is None:
            new = _quadratic_layer(layer, neuron)
        else:
            if convert:
                skipped.append(f"{layer.name} ({reason})")
            new = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, new, convert and reason is None))
        return new

    new_model = keras.models.clone_model(model, clone_function=clone,
                                         recursive=True)
    for old, new, converted in pairs:
        if converted:
            # Copies: on JAX, assigning the variable itself would share its
            # buffer, which the new model's compiled steps may donate (the
            # original model then fails with "Array has been deleted").
            new.kernel.assign(keras.ops.convert_to_numpy(old.kernel))
            if old.use_bias:
                new.bias.assign(keras.ops.convert_to_numpy(old.bias))
        else:
            new.set_weights(old.get_weights())
        new.trainable = old.trainable
    if skipped:
        warnings.warn(
            "quadratize: left unchanged: "
            + ", ".join(skipped), stacklevel=2)
    return new_model
