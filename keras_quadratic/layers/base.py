"""The quadratic neuron, shared by the convolution and dense layers.

Full neuron:     y = act((W_r x + b_r) * (W_g x + b_g) + W_b (x*x) + c)
Compact neuron:  y = act(W_r x + W_b (x*x) + b_r)

W_r, b_r are `kernel`, `bias` (exactly as in the Keras counterpart); W_g, b_g
are `gate_kernel`, `gate_bias`; W_b, c are `square_kernel`, `square_bias`.
The defaults are the ReLinear initialization (W_g = 0, b_g = 1, W_b = 0,
c = 0): at initialization the layer computes what its Keras counterpart with
the same `kernel` and `bias` computes.
"""

import keras
from keras import activations
from keras import constraints
from keras import initializers
from keras import regularizers

from keras_quadratic.groups import GATE
from keras_quadratic.groups import SQUARE
from keras_quadratic.groups import quadratic_group  # noqa: F401 (its old home)
from keras_quadratic.groups import quadratic_layer_of  # noqa: F401
from keras_quadratic.groups import tag
from keras_quadratic.regularizers import ReLinearRegularizer
from keras_quadratic.regularizers import _SumRegularizer

# The compact neuron as one linear map of [x, x*x] (concatenated) rather
# than two, on the backend where that measured faster (compact QResNet20
# training step, batch 128, 2-core CPU, benchmarks/keras_step.py): JAX
# 0.89 s fused vs 1.48 s; torch 0.59 s vs 0.51 s; TensorFlow 0.42-0.50 s vs
# 0.41-0.42 s.
_FUSE_COMPACT = keras.backend.backend() == "jax"

def _explicit_arguments(local_variables):
    """The arguments of an `__init__` with an explicit signature, from its
    `locals()`, as keywords for the base class (its `**kwargs` merged in)."""
    arguments = {
        key: value for key, value in local_variables.items()
        if key not in ("self", "__class__", "kwargs")
    }
    extra = local_variables.get("kwargs", {})
    layer = type(local_variables["self"])
    unknown = sorted(key for key in extra if key in FULL_ONLY_ARGUMENTS)
    if layer.compact and unknown:
        raise TypeError(
            f"{layer.__name__}: the compact neuron has no gate and one bias; "
            f"unexpected arguments {unknown}.")
    arguments.update(extra)
    return arguments


# Arguments of the full neuron that the compact one does not have (no gate,
# no second bias). Configs saved before 0.2 listed them for compact layers
# too; `from_config` drops them there.
FULL_ONLY_ARGUMENTS = tuple(
    f"{weight}_{kind}"
    for weight in ("gate_kernel", "gate_bias", "square_bias")
    for kind in ("initializer", "regularizer", "constraint")
)


def _positive_int(value, name, layer):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"{layer}: argument `{name}` must be a positive integer. "
            f"Received: {name}={value!r}"
        )
    return value


class QuadraticLayer(keras.layers.Layer):
    """Base of every quadratic layer: the quadratic weights and the neuron.

    Subclasses give the linear map (`_linear`), the shapes and the output
    axis; this class creates `gate_*`/`square_*` weights, tags them, adds the
    ReLinear penalty and combines the terms.
    """

    compact = False
    # Whether the full neuron computes W_r x and W_g x as one linear map over
    # the concatenated kernels (and, on JAX, the compact neuron W_r x +
    # W_b x^2 as one map over [x, x^2]). A depthwise map cannot: its output
    # channels interleave per input channel, so it runs them one by one.
    fuse_kernels = True

    def __init__(
        self,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        gate_kernel_initializer="zeros",
        gate_bias_initializer="ones",
        square_kernel_initializer="zeros",
        square_bias_initializer="zeros",
        gate_kernel_regularizer=None,
        gate_bias_regularizer=None,
        square_kernel_regularizer=None,
        square_bias_regularizer=None,
        gate_kernel_constraint=None,
        gate_bias_constraint=None,
        square_kernel_constraint=None,
        square_bias_constraint=None,
        relinear_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        weights = {
            "kernel": (kernel_initializer, kernel_regularizer,
                       kernel_constraint),
            "bias": (bias_initializer, bias_regularizer, bias_constraint),
            "gate_kernel": (gate_kernel_initializer, gate_kernel_regularizer,
                            gate_kernel_constraint),
            "gate_bias": (gate_bias_initializer, gate_bias_regularizer,
                          gate_bias_constraint),
            "square_kernel": (square_kernel_initializer,
                              square_kernel_regularizer,
                              square_kernel_constraint),
            "square_bias": (square_bias_initializer, square_bias_regularizer,
                            square_bias_constraint),
        }
        for weight, (init, reg, cons) in weights.items():
            setattr(self, f"{weight}_initializer", initializers.get(init))
            setattr(self, f"{weight}_regularizer", regularizers.get(reg))
            setattr(self, f"{weight}_constraint", constraints.get(cons))
        if relinear_regularizer is not None and not isinstance(
            relinear_regularizer, ReLinearRegularizer
        ):
            if isinstance(relinear_regularizer, dict):
                relinear_regularizer = keras.saving.deserialize_keras_object(
                    relinear_regularizer
                )
            if not isinstance(relinear_regularizer, ReLinearRegularizer):
                raise TypeError(
                    f"{type(self).__name__}: argument `relinear_regularizer` "
                    "must be a keras_quadratic.regularizers."
                    "ReLinearRegularizer or None. "
                    f"Received: {relinear_regularizer!r}"
                )
        self.relinear_regularizer = relinear_regularizer

    # -- weights -----------------------------------------------------------
    def _add_neuron_weight(self, name, shape, group=None, reference=0.0):
        """Adds weight `name`; a quadratic one (`group` "gate" or "square")
        is tagged and gets the ReLinear penalty toward `reference`."""
        regularizer = getattr(self, f"{name}_regularizer")
        if group is not None and self.relinear_regularizer is not None:
            penalty = self.relinear_regularizer.penalty(group, reference)
            if penalty is not None:
                regularizer = (
                    penalty if regularizer is None
                    else _SumRegularizer(regularizer, penalty)
                )
        variable = self.add_weight(
            name=name,
            shape=shape,
            initializer=getattr(self, f"{name}_initializer"),
            regularizer=regularizer,
            constraint=getattr(self, f"{name}_constraint"),
            trainable=True,
            dtype=self.dtype,
        )
        return variable if group is None else tag(variable, group, self)

    def _build_neuron(self, kernel_shape, units):
        """Creates all weights. `units` is the number of outputs."""
        add = self._add_neuron_weight
        self.kernel = add("kernel", kernel_shape)
        self.bias = add("bias", (units,)) if self.use_bias else None
        self.gate_kernel = self.gate_bias = self.square_bias = None
        if not self.compact:
            self.gate_kernel = add("gate_kernel", kernel_shape, GATE)
            self.gate_bias = add("gate_bias", (units,), GATE, reference=1.0)
        self.square_kernel = add("square_kernel", kernel_shape, SQUARE)
        if self.use_bias and not self.compact:
            self.square_bias = add("square_bias", (units,), SQUARE)

    # -- computation -------------------------------------------------------
    def _linear(self, inputs, kernel):
        """The linear map of the layer (a convolution or a matmul)."""
        raise NotImplementedError

    def _add_bias(self, outputs, bias):
        raise NotImplementedError

    def _split_outputs(self, outputs):
        raise NotImplementedError

    def _concat_inputs(self, first, second):
        raise NotImplementedError

    def call(self, inputs):
        ops = keras.ops
        inputs = ops.cast(inputs, self.compute_dtype)
        squared = ops.square(inputs)
        if self.compact:
            if _FUSE_COMPACT and self.fuse_kernels:
                # One linear map over [x, x*x] with the kernels stacked on
                # the input axis: W_r x + W_b x^2 in one pass.
                kernel = ops.concatenate(
                    [self.kernel, self.square_kernel], axis=-2
                )
                outputs = self._linear(
                    self._concat_inputs(inputs, squared), kernel
                )
            else:
                outputs = ops.add(self._linear(inputs, self.kernel),
                                  self._linear(squared, self.square_kernel))
            if self.use_bias:
                outputs = self._add_bias(outputs, self.bias)
        else:
            if self.fuse_kernels:
                # W_r x and W_g x as one linear map with twice the outputs.
                kernel = ops.concatenate([self.kernel, self.gate_kernel],
                                         axis=-1)
                linear, gate = self._split_outputs(
                    self._linear(inputs, kernel))
            else:
                linear = self._linear(inputs, self.kernel)
                gate = self._linear(inputs, self.gate_kernel)
            if self.use_bias:
                linear = self._add_bias(linear, self.bias)
            gate = self._add_bias(gate, self.gate_bias)
            square = self._linear(squared, self.square_kernel)
            if self.use_bias:
                square = self._add_bias(square, self.square_bias)
            outputs = ops.add(ops.multiply(linear, gate), square)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    # -- config ------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config["activation"] = activations.serialize(self.activation)
        config["use_bias"] = self.use_bias
        config["activity_regularizer"] = regularizers.serialize(
            self.activity_regularizer)
        for weight in ("kernel", "bias", "gate_kernel", "gate_bias",
                       "square_kernel", "square_bias"):
            for kind, module in (("initializer", initializers),
                                 ("regularizer", regularizers),
                                 ("constraint", constraints)):
                argument = f"{weight}_{kind}"
                if not (self.compact and argument in FULL_ONLY_ARGUMENTS):
                    config[argument] = module.serialize(
                        getattr(self, argument))
        config["relinear_regularizer"] = (
            None if self.relinear_regularizer is None
            else keras.saving.serialize_keras_object(self.relinear_regularizer)
        )
        return config

    @classmethod
    def from_config(cls, config):
        if cls.compact:
            config = {key: value for key, value in config.items()
                      if key not in FULL_ONLY_ARGUMENTS}
        return super().from_config(config)
