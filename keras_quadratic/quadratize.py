"""quadratize(): a trained conventional model as a ReLinear quadratic one.

Every selected Conv1D/2D/3D, Dense, DepthwiseConv1D/2D and
SeparableConv1D/2D layer becomes its quadratic counterpart with the same
configuration, its kernels and bias copied and its quadratic weights at the
ReLinear initialization, so the new model computes what the old one did;
every other layer, operation and weight is copied.
"""

import warnings

import keras
import numpy as np

from keras_quadratic import layers as quadratic_layers

# Arguments the quadratic layer takes as the Keras layer's config has them;
# the new layer's config is built from these alone.
_COMMON = ("name", "trainable", "dtype", "activation", "use_bias",
           "bias_initializer", "bias_regularizer", "activity_regularizer",
           "bias_constraint")
_WINDOW = ("kernel_size", "strides", "padding", "data_format",
           "dilation_rate")


def _weight_arguments(weight):
    return tuple(f"{weight}_{kind}"
                 for kind in ("initializer", "regularizer", "constraint"))


_CONV = _COMMON + _weight_arguments("kernel") + _WINDOW + ("filters",
                                                           "groups")
_DENSE = _COMMON + _weight_arguments("kernel") + ("units",)
_DEPTHWISE = (_COMMON + _weight_arguments("depthwise") + _WINDOW
              + ("depth_multiplier",))
_SEPARABLE = _DEPTHWISE + _weight_arguments("pointwise") + ("filters",)

# Keras layer: (full counterpart, compact counterpart, the arguments they
# share, the weights copied: the quadratic layers keep Keras's names).
_COUNTERPARTS = {
    keras.layers.Conv1D: ("QuadraticConv1D", "CompactQuadraticConv1D",
                          _CONV, ("kernel", "bias")),
    keras.layers.Conv2D: ("QuadraticConv2D", "CompactQuadraticConv2D",
                          _CONV, ("kernel", "bias")),
    keras.layers.Conv3D: ("QuadraticConv3D", "CompactQuadraticConv3D",
                          _CONV, ("kernel", "bias")),
    keras.layers.Dense: ("QuadraticDense", "CompactQuadraticDense",
                         _DENSE, ("kernel", "bias")),
    keras.layers.DepthwiseConv1D: (
        "QuadraticDepthwiseConv1D", "CompactQuadraticDepthwiseConv1D",
        _DEPTHWISE, ("kernel", "bias")),
    keras.layers.DepthwiseConv2D: (
        "QuadraticDepthwiseConv2D", "CompactQuadraticDepthwiseConv2D",
        _DEPTHWISE, ("kernel", "bias")),
    keras.layers.SeparableConv1D: (
        "QuadraticSeparableConv1D", "CompactQuadraticSeparableConv1D",
        _SEPARABLE, ("depthwise_kernel", "pointwise_kernel", "bias")),
    keras.layers.SeparableConv2D: (
        "QuadraticSeparableConv2D", "CompactQuadraticSeparableConv2D",
        _SEPARABLE, ("depthwise_kernel", "pointwise_kernel", "bias")),
}
# Every layer whose math is a linear map: the candidates for conversion
# (those without a counterpart above are kept and named in a warning).
_LINEAR_MAP_LAYERS = tuple(_COUNTERPARTS) + (
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose, keras.layers.EinsumDense,
)
NEURONS = ("quadratic", "compact")


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
    groups = config.get("groups", 1)
    if groups != 1 and not _is_depthwise(layer):
        return (f"grouped convolution (groups={groups}, neither 1 nor the "
                "number of input channels)")
    # Any other argument in use (a newer Keras's, say) would be lost.
    arguments = _COUNTERPARTS[type(layer)][2]
    for key, value in config.items():
        if key not in arguments and value not in (None, False):
            return (f"its argument {key}={value!r} has no quadratic "
                    "counterpart")
    return None


def _is_depthwise(layer):
    """Whether `layer` is a ConvND with one group per input channel (as
    ConvNeXt writes its depthwise convolutions): a depthwise convolution
    with `depth_multiplier = filters // groups`, the same output channels
    in the same order."""
    return (type(layer) in _DEPTHWISE_OF and layer.groups != 1
            and layer.kernel.shape[-2] == 1)  # one input channel per group


_DEPTHWISE_OF = {keras.layers.Conv1D: keras.layers.DepthwiseConv1D,
                 keras.layers.Conv2D: keras.layers.DepthwiseConv2D}
# ConvND(groups=channels) -> DepthwiseConvND: its arguments by their names.
_AS_DEPTHWISE = {"kernel_initializer": "depthwise_initializer",
                 "kernel_regularizer": "depthwise_regularizer",
                 "kernel_constraint": "depthwise_constraint"}


def _quadratic_layer(layer, neuron, quadratic_pointwise):
    full, compact, arguments, _ = _COUNTERPARTS[type(layer)]
    config = layer.get_config()
    config = {key: config[key] for key in arguments if key in config}
    if _is_depthwise(layer):
        full, compact, _, _ = _COUNTERPARTS[_DEPTHWISE_OF[type(layer)]]
        config["depth_multiplier"] = config.pop("filters") // config.pop(
            "groups")
        config = {_AS_DEPTHWISE.get(key, key): value
                  for key, value in config.items()}
    cls = getattr(quadratic_layers, compact if neuron == "compact" else full)
    if issubclass(cls, quadratic_layers.BaseQuadraticSeparableConv):
        config["quadratic_pointwise"] = bool(quadratic_pointwise(layer))
    return cls.from_config(config)


def _is_functional(model):
    """Whether `model` is a Functional model (built by `keras.Model(inputs,
    outputs)`, keras.applications and many keras-hub models) whose layer
    graph `clone_model` can rebuild. Keras exports no Functional class, so
    it is recognised by name in the class hierarchy."""
    return isinstance(model, keras.Model) and any(
        cls.__name__ == "Functional" and cls.__module__.startswith("keras")
        for cls in type(model).__mro__)


def quadratize(model, neuron="quadratic", layers=None,
               quadratic_pointwise=False):
    """Returns a copy of `model` whose convolution and Dense layers are
    quadratic.

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
            shared layers, multiple inputs/outputs and operations on
            symbolic tensors, as in `keras.applications`, are fine).
        neuron: "quadratic" (full neuron, default) or "compact".
        layers: which layers to convert: None (default: every `Conv1D`,
            `Conv2D`, `Conv3D`, `Dense`, `DepthwiseConv1D/2D` and
            `SeparableConv1D/2D`), a list of layer names (a name the
            model does not have is a `ValueError`; a named layer with no
            quadratic counterpart is named in the warning), or a predicate
            `f(layer) -> bool`. Layers inside other layers (`TimeDistributed`,
            `Bidirectional`, custom layers) are copied as they are and named
            in the warning; nested models are converted.
        quadratic_pointwise: for a converted `SeparableConv1D/2D`, whether
            its pointwise (1x1) part becomes quadratic too: False (default),
            True, or a predicate `f(layer) -> bool` of the Keras layer. Its
            depthwise part is always quadratic. The default keeps the
            quadratic terms where they are cheap: they add two depthwise
            kernels, while the pointwise kernel, most of the layer's
            weights, would triple.

    Returns:
        A new model; `model` is not modified. Layers that match the
        selection but cannot be converted (grouped or transposed
        convolutions, `EinsumDense`, quantized layers, layers with a LoRA
        or DoRA adapter or with an argument the quadratic layer does not
        take) are kept as they are and listed, with the reason, in a
        warning.

    Raises:
        ValueError: for a subclassed model (its layer graph cannot be
            rebuilt), an unbuilt model, or an unknown `neuron`.
        TypeError: for a `quadratic_pointwise` that is neither a bool nor
            callable.

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
    names = None
    if layers is None:
        selected = lambda layer: True  # noqa: E731
    elif callable(layers):
        selected = layers
    else:
        names = set(layers) if not isinstance(layers, str) else {layers}
        selected = lambda layer: layer.name in names  # noqa: E731
        from keras_quadratic.callbacks import layer_paths

        known = {path.rsplit("/", 1)[-1]
                 for path in layer_paths(model).values()}
        if names - known:
            raise ValueError(
                "quadratize: argument `layers` names layers the model does "
                f"not have: {sorted(names - known)}. Its layers: "
                f"{sorted(known)}.")

    if isinstance(quadratic_pointwise, bool):
        pointwise = lambda layer: quadratic_pointwise  # noqa: E731
    elif callable(quadratic_pointwise):
        pointwise = quadratic_pointwise
    else:
        raise TypeError(
            "quadratize: argument `quadratic_pointwise` must be True, False "
            "or a predicate f(layer) -> bool. Received: "
            f"quadratic_pointwise={quadratic_pointwise!r}")

    pairs = []
    skipped = []

    def clone(layer):
        if not isinstance(layer, keras.layers.Layer):
            # An operation applied to symbolic tensors (`x + 3.0` makes an
            # `Add` node): no weights; cloned as Keras's own clone does.
            return layer.__class__.from_config(layer.get_config())
        convert = (
            not isinstance(layer, keras.Model)
            and isinstance(layer, _LINEAR_MAP_LAYERS)
            and selected(layer)
        )
        reason = _why_not(layer) if convert else None
        if convert and reason is None:
            new = _quadratic_layer(layer, neuron, pointwise)
        else:
            if convert:
                skipped.append(f"{layer.name} ({reason})")
            elif names is not None and layer.name in names and not (
                    isinstance(layer, keras.Model)):
                skipped.append(f"{layer.name} (a {type(layer).__name__}: "
                               "no quadratic counterpart)")
            if not isinstance(layer, keras.Model):
                # Wrappers (TimeDistributed, Bidirectional) and custom
                # layers are copied whole: their linear sublayers stay.
                # (Keras has no public list of a layer's sublayers.)
                for inner in layer._flatten_layers(include_self=False):
                    if isinstance(inner, _LINEAR_MAP_LAYERS) and selected(
                            inner):
                        skipped.append(
                            f"{inner.name} inside {layer.name} (a "
                            f"{type(layer).__name__}: layers inside other "
                            "layers are copied as they are)")
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
            for weight in _COUNTERPARTS[type(old)][3]:
                if getattr(old, weight) is not None:
                    target = getattr(new, weight)
                    # (a grouped kernel (..., 1, filters) as a depthwise
                    # one (..., channels, depth_multiplier): the same
                    # values in the same order)
                    target.assign(np.reshape(
                        keras.ops.convert_to_numpy(getattr(old, weight)),
                        target.shape))
        else:
            new.set_weights(old.get_weights())
        new.trainable = old.trainable
    if skipped:
        warnings.warn(
            "quadratize: left unchanged: "
            + ", ".join(skipped), stacklevel=2)
    return new_model
