"""QResNet: the CIFAR ResNets of He et al. with quadratic convolutions.

Depth 6n+2: a 3x3 stem convolution (16 filters), three stages of n basic
blocks (16, 32, 64 filters; the 2nd and 3rd start with stride 2), global
average pooling and a dense classifier. Each block:

    out = relu(shortcut(x) + alpha * bn(qconv(relu(bn(qconv(x))))))

with alpha a learnable scalar starting at 0 when `rezero=True` (else 1).
Only the residual-branch convolutions are quadratic; stem and classifier
stay linear, as in the original experiments.
"""

import os

import keras
import numpy as np

from keras_quadratic.layers import BatchNormalization
from keras_quadratic.layers import CompactQuadraticConv2D
from keras_quadratic.layers import QuadraticConv2D

NEURONS = ("quadratic", "compact", "linear")
SHORTCUTS = ("A", "projection")
_CONVS = {
    "quadratic": QuadraticConv2D,
    "compact": CompactQuadraticConv2D,
    "linear": keras.layers.Conv2D,
}


VALID_DEPTHS = "6n+2 with n >= 1, e.g. 8, 14, 20, 32, 44, 56, 110, 1202"

# CIFAR-10's per-channel mean and standard deviation (RGB, of images scaled
# to [0, 1]): the normalization of the original experiments and of the
# shipped weights (`preprocess_input`).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# The weights that ship with the package (`QResNet(weights="cifar10")`), in
# keras_quadratic/models/weights: (depth, neuron) -> file. How each was
# trained, and its test accuracy: docs/results/cifar10.json.
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "weights")
CIFAR10_WEIGHTS = {
    (20, "quadratic"): "qresnet20_cifar10.weights.h5",
    (20, "compact"): "compactqresnet20_cifar10.weights.h5",
    (20, "linear"): "resnet20_cifar10.weights.h5",
}


def preprocess_input(x, data_format=None):
    """Maps CIFAR images with values 0-255 to what QResNet's CIFAR-10
    weights expect: `(x / 255 - mean) / std` per channel, with CIFAR-10's
    RGB mean (0.4914, 0.4822, 0.4465) and std (0.2470, 0.2435, 0.2616), as
    in the original experiments (like `keras.applications.*.
    preprocess_input`).

    Args:
        x: images (a batch, or one image), uint8 or float, RGB, values
            0-255: a NumPy array or a tensor of the backend.
        data_format: "channels_last" (channels on the last axis) or
            "channels_first" (on the first axis after the batch's, or the
            first of one image); defaults to
            `keras.config.image_data_format()`.

    Returns:
        float32 images of the same shape: a NumPy array for a NumPy input,
        else a tensor.

    Example:

    >>> import numpy as np
    >>> import keras_quadratic as kq
    >>> images = np.full((2, 32, 32, 3), 255, "uint8")
    >>> kq.models.preprocess_input(images)[0, 0, 0].round(3)
    array([2.059, 2.126, 2.116], dtype=float32)
    """
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "preprocess_input: argument `data_format` must be "
            "'channels_last' or 'channels_first'. Received: "
            f"data_format={data_format!r}")
    ndim = len(x.shape)
    if ndim not in (3, 4):
        raise ValueError(
            "preprocess_input: `x` must be one image (3 axes) or a batch "
            f"of images (4 axes). Received: shape {tuple(x.shape)}")
    axis = -1 if data_format == "channels_last" else ndim - 3
    if x.shape[axis] != 3:
        raise ValueError(
            f"preprocess_input: `x` must have 3 channels (RGB) on axis "
            f"{axis} for data_format={data_format!r}. Received: shape "
            f"{tuple(x.shape)}")
    shape = [1] * ndim
    shape[axis] = 3
    mean = np.reshape(np.float32(CIFAR10_MEAN) * 255, shape)
    std = np.reshape(np.float32(CIFAR10_STD) * 255, shape)
    if isinstance(x, np.ndarray):
        return (x.astype("float32") - mean) / std
    # in the backend, on the tensor's device
    ops = keras.ops
    return ops.divide(ops.subtract(ops.cast(x, "float32"), mean), std)


@keras.saving.register_keras_serializable(package="keras_quadratic")
class ZeroPadShortcut(keras.layers.Layer):
    """The option-A shortcut of the CIFAR ResNets (He et al. 2016).

    Subsamples the input by `stride` in each spatial dimension (keeping the
    pixels 0, stride, 2 * stride, ...) and zero-pads the channels equally
    on both sides up to `filters`. It has no weights.

    Args:
        filters: int, the number of output channels (at least the input's).
        stride: int, the subsampling step (default 2).
        data_format: "channels_last" or "channels_first"; defaults to
            `keras.config.image_data_format()`.
        **kwargs: base layer arguments (`name`, `dtype`).

    Input shape:
        4D tensor `(batch, rows, cols, channels)` ("channels_last") or
        `(batch, channels, rows, cols)` ("channels_first").

    Output shape:
        4D tensor with `ceil(rows / stride)`, `ceil(cols / stride)` and
        `filters` channels.

    Example:

    >>> import numpy as np
    >>> import keras_quadratic as kq
    >>> x = np.ones((2, 8, 8, 16), "float32")
    >>> tuple(kq.models.ZeroPadShortcut(32)(x).shape)
    (2, 4, 4, 32)
    """

    def __init__(self, filters, stride=2, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.stride = int(stride)
        self.data_format = data_format or keras.config.image_data_format()

    def call(self, x):
        ops = keras.ops
        channel_axis = -1 if self.data_format == "channels_last" else 1
        channels = x.shape[channel_axis]
        s = self.stride
        if self.data_format == "channels_last":
            x = x[:, ::s, ::s, :]
        else:
            x = x[:, :, ::s, ::s]
        extra = self.filters - channels
        pad = [[0, 0]] * 4
        pad[channel_axis] = [extra // 2, extra - extra // 2]
        return ops.pad(x, pad)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        s = self.stride
        if self.data_format == "channels_last":
            spatial, channel = (1, 2), 3
        else:
            spatial, channel = (2, 3), 1
        for axis in spatial:
            if shape[axis] is not None:
                shape[axis] = (shape[axis] + s - 1) // s
        shape[channel] = self.filters
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "stride": self.stride,
                       "data_format": self.data_format})
        return config


@keras.saving.register_keras_serializable(package="keras_quadratic")
class ReZero(keras.layers.Layer):
    """ReZero: scales its input by a learnable scalar that starts at 0.

        out = alpha * x,  alpha = 0 at initialization

    Put at the end of a residual branch (`x + ReZero()(branch(x))`), it
    makes each block start as the identity (Bachlechner et al. 2020); the
    ReLinear paper combines the two for residual quadratic networks.

    Args:
        **kwargs: base layer arguments (`name`, `dtype`, `trainable`).

    Input shape:
        Any.

    Output shape:
        Same as the input.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_quadratic as kq
    >>> layer = kq.models.ReZero()
    >>> y = keras.ops.convert_to_numpy(layer(np.ones((2, 3), "float32")))
    >>> float(np.abs(y).max())
    0.0
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=(),
                                     initializer="zeros")

    def call(self, x):
        return x * keras.ops.cast(self.alpha, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def QResNet(
    depth=20,
    neuron="quadratic",
    rezero=False,
    num_classes=10,
    input_shape=None,
    shortcut="A",
    data_format=None,
    relinear_regularizer=None,
    name=None,
    weights=None,
):
    """Returns a CIFAR ResNet (He et al. 2016) with quadratic convolutions.

    Depth 6n+2: a 3x3 stem convolution (16 filters), three stages of n
    basic blocks (16, 32, 64 filters, the 2nd and 3rd starting with stride
    2), global average pooling and a dense classifier (logits). Each block
    computes

        out = relu(shortcut(x) + alpha * bn(qconv(relu(bn(qconv(x))))))

    with `qconv` a `QuadraticConv2D` (He-normal `kernel`, ReLinear
    initialization for the rest), alpha a learnable scalar from 0 with
    `rezero=True` (else 1), and batch normalization with PyTorch's momentum
    and epsilon, as in the original experiments. Stem and classifier stay
    linear. Trainable parameters: QResNet20 806,266, ResNet20
    (`neuron="linear"`) 269,722, as the original code.

    Args:
        depth: 6n+2 (20, 32, 44, 56, 110, 1202, ...).
        neuron: "quadratic" (full neuron), "compact", or "linear" (plain
            Conv2D: the conventional ResNet baseline).
        rezero: scale each residual branch by a learnable scalar from 0.
        num_classes: outputs of the classifier (logits, no softmax).
        input_shape: shape of one image, in `data_format` order; default
            a CIFAR image: (32, 32, 3) channels_last, (3, 32, 32)
            channels_first.
        shortcut: "A" (subsample + zero-pad channels, the original's) or
            "projection" (1x1 convolution + batch normalization).
        data_format: "channels_last" or "channels_first"; defaults to
            `keras.config.image_data_format()`.
        relinear_regularizer: a
            `keras_quadratic.regularizers.ReLinearRegularizer` for every
            quadratic convolution.
        name: the model's name; default "QResNet<depth>" (or
            "CompactQResNet<depth>", "ResNet<depth>").
        weights: None (random initialization), "cifar10" (weights trained
            on CIFAR-10 that ship with the package, for depth 20 and each
            neuron, with the other arguments at their defaults except
            `data_format`, `input_shape` and `relinear_regularizer`;
            inputs from `preprocess_input`; how they were trained and
            their test accuracy: docs/results/cifar10.json), or the path
            of a `.weights.h5` file to load.

    Returns:
        A functional `keras.Model` from images to logits (float32 logits
        under a 16-bit policy such as "mixed_bfloat16", else the global
        policy's dtype).

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_quadratic as kq
    >>> model = kq.models.QResNet(depth=8)
    >>> model.output_shape
    (None, 10)
    >>> model.compile(
    ...     kq.optimizers.ReLinearOptimizer(keras.optimizers.SGD(0.1)),
    ...     keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x = np.random.rand(4, 32, 32, 3).astype("float32")
    >>> history = model.fit(x, np.arange(4), verbose=0)

    With the CIFAR-10 weights:

    >>> model = kq.models.QResNet(20, weights="cifar10")
    >>> images = np.zeros((1, 32, 32, 3), "uint8")
    >>> model.predict(kq.models.preprocess_input(images), verbose=0).shape
    (1, 10)
    """
    if neuron not in NEURONS:
        raise ValueError(
            f"QResNet: argument `neuron` must be one of {NEURONS}. "
            f"Received: neuron={neuron!r}"
        )
    if (
        isinstance(depth, bool) or not isinstance(depth, int)
        or depth < 8 or (depth - 2) % 6
    ):
        raise ValueError(
            f"QResNet: argument `depth` must be {VALID_DEPTHS}. "
            f"Received: depth={depth!r}"
        )
    if shortcut not in SHORTCUTS:
        raise ValueError(
            f"QResNet: argument `shortcut` must be one of {SHORTCUTS}. "
            f"Received: shortcut={shortcut!r}"
        )
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "QResNet: argument `data_format` must be 'channels_last' or "
            f"'channels_first'. Received: data_format={data_format!r}"
        )
    if relinear_regularizer is not None and neuron == "linear":
        raise ValueError(
            "QResNet: `relinear_regularizer` needs a quadratic neuron; "
            "received neuron='linear'."
        )
    weights_file = _weights_file(weights, depth, neuron, rezero,
                                 num_classes, input_shape, shortcut,
                                 data_format)
    blocks_per_stage = (depth - 2) // 6
    bn_axis = -1 if data_format == "channels_last" else 1

    def batch_norm(label):
        # PyTorch's defaults, as in the original (momentum 0.1 there): with
        # Keras's 0.99 the moving statistics lag far behind in short runs,
        # and a quadratic network amplifies that at inference.
        return BatchNormalization(axis=bn_axis, momentum=0.9, epsilon=1e-5,
                                  name=label)
    conv_class = _CONVS[neuron]
    layers = keras.layers

    def branch_conv(x, filters, stride, label):
        kwargs = dict(strides=stride, padding="same", data_format=data_format,
                      kernel_initializer="he_normal", name=label)
        if neuron == "linear":
            kwargs["use_bias"] = False
        else:
            kwargs["relinear_regularizer"] = relinear_regularizer
        if stride != 1:
            # PyTorch's padding=1: one pixel on every side, so that the
            # strided windows are centred on the pixels the shortcut keeps
            # (0, 2, 4, ...). Keras's "same" would pad only after, centring
            # them one pixel off.
            x = layers.ZeroPadding2D(1, data_format=data_format,
                                     name=f"{label}_pad")(x)
            kwargs["padding"] = "valid"
        return conv_class(filters, 3, **kwargs)(x)

    if input_shape is None:
        input_shape = ((32, 32, 3) if data_format == "channels_last"
                       else (3, 32, 32))
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Conv2D(16, 3, padding="same", use_bias=False,
                      kernel_initializer="he_normal", data_format=data_format,
                      name="stem_conv")(inputs)
    x = batch_norm("stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    channels = 16
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(blocks_per_stage):
            label = f"stage{stage}_block{block + 1}"
            stride = 2 if stage > 1 and block == 0 else 1
            h = branch_conv(x, filters, stride, f"{label}_conv1")
            h = batch_norm(f"{label}_bn1")(h)
            h = layers.Activation("relu", name=f"{label}_relu1")(h)
            h = branch_conv(h, filters, 1, f"{label}_conv2")
            h = batch_norm(f"{label}_bn2")(h)
            if rezero:
                h = ReZero(name=f"{label}_rezero")(h)
            if stride != 1 or channels != filters:
                if shortcut == "A":
                    s = ZeroPadShortcut(filters, stride, data_format,
                                        name=f"{label}_shortcut")(x)
                else:
                    s = layers.Conv2D(filters, 1, strides=stride,
                                      use_bias=False, data_format=data_format,
                                      kernel_initializer="he_normal",
                                      name=f"{label}_shortcut_conv")(x)
                    s = batch_norm(f"{label}_shortcut_bn")(s)
            else:
                s = x
            x = layers.Add(name=f"{label}_add")([s, h])
            x = layers.Activation("relu", name=f"{label}_out")(x)
            channels = filters
    x = layers.GlobalAveragePooling2D(data_format=data_format, name="pool")(x)
    # Logits in float32 under a 16-bit compute policy (mixed or not), as
    # Keras's mixed precision guide advises; otherwise the global policy
    # (float64 stays float64).
    compute_dtype = keras.config.dtype_policy().compute_dtype
    head_dtype = ("float32" if compute_dtype in ("float16", "bfloat16")
                  else None)
    outputs = layers.Dense(num_classes, kernel_initializer="he_normal",
                           dtype=head_dtype, name="classifier")(x)
    if name is None:
        prefix = {"quadratic": "QResNet", "compact": "CompactQResNet",
                  "linear": "ResNet"}[neuron]
        name = f"{prefix}{depth}"
    model = keras.Model(inputs, outputs, name=name)
    if weights_file is not None:
        model.load_weights(weights_file)
    return model


def _weights_file(weights, depth, neuron, rezero, num_classes, input_shape,
                  shortcut, data_format):
    """The file that `QResNet(weights=...)` loads, or None; a clear error
    for a combination without weights."""
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            "QResNet: argument `weights` must be None, 'cifar10' or the path "
            f"of a .weights.h5 file. Received: weights={weights!r}")
    if weights != "cifar10":
        if not os.path.isfile(weights):
            raise ValueError(
                "QResNet: argument `weights` must be None, 'cifar10' or the "
                f"path of an existing .weights.h5 file. Received: "
                f"weights={weights!r}")
        return weights
    available = ", ".join(f"(depth={d}, neuron={n!r})"
                          for d, n in CIFAR10_WEIGHTS)
    if (depth, neuron) not in CIFAR10_WEIGHTS:
        raise ValueError(
            f"QResNet: no CIFAR-10 weights ship for depth={depth}, "
            f"neuron={neuron!r}; weights='cifar10' is available for "
            f"{available}.")
    channels = None
    if input_shape is not None:
        try:
            channels = tuple(input_shape)[
                -1 if data_format == "channels_last" else 0]
        except (TypeError, IndexError):
            raise ValueError(
                "QResNet: argument `input_shape` must be the shape of one "
                "image, e.g. (32, 32, 3). Received: "
                f"input_shape={input_shape!r}") from None
    wrong = {key: value for key, value, default in (
        ("rezero", rezero, False), ("num_classes", num_classes, 10),
        ("shortcut", shortcut, "A")) if value != default}
    if channels not in (None, 3):
        wrong["input_shape"] = input_shape
    if wrong:
        raise ValueError(
            "QResNet: the CIFAR-10 weights were trained with rezero=False, "
            "num_classes=10, shortcut='A' and 3-channel images; with "
            f"weights='cifar10' these must stay so. Received: {wrong}")
    return os.path.join(WEIGHTS_DIR, CIFAR10_WEIGHTS[(depth, neuron)])
