"""Independent float64 NumPy reference of the quadratic neurons."""

import numpy as np


def conv_nd(x, kernel, strides, padding, dilation, channels_first=False):
    """Plain N-d cross-correlation (as Keras's conv), float64.

    x: (batch, *spatial, in) [or channels first]; kernel: (*k, in, out).
    """
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    rank = kernel.ndim - 2
    ksize = kernel.shape[:rank]
    spatial = x.shape[1:-1]
    if padding == "causal":
        left = dilation[0] * (ksize[0] - 1)
        x = np.pad(x, [(0, 0), (left, 0), (0, 0)])
        padding = "valid"
        spatial = x.shape[1:-1]
    if padding == "same":
        pads = []
        for n, k, s, d in zip(spatial, ksize, strides, dilation):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, [(0, 0)] + pads + [(0, 0)])
        spatial = x.shape[1:-1]
    out_shape = [
        (n - d * (k - 1) - 1) // s + 1
        for n, k, s, d in zip(spatial, ksize, strides, dilation)
    ]
    y = np.zeros((x.shape[0], *out_shape, kernel.shape[-1]))
    for offset in np.ndindex(*ksize):
        index = tuple(
            slice(o * d, o * d + (m - 1) * s + 1, s)
            for o, d, s, m in zip(offset, dilation, strides, out_shape)
        )
        patch = x[(slice(None),) + index]
        y += patch @ kernel[offset]
    if channels_first:
        y = np.moveaxis(y, -1, 1)
    return y


def quadratic(linear, x, weights, compact, use_bias, channels_first=False):
    """The neuron given a linear map `linear(inputs, kernel)`, float64."""
    x = np.asarray(x, np.float64)
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}

    def bias(b):
        return b.reshape((-1,) + (1,) * (x.ndim - 2)) if channels_first else b

    r = linear(x, w["kernel"])
    square = linear(x * x, w["square_kernel"])
    if compact:
        out = r + square
        if use_bias:
            out = out + bias(w["bias"])
        return out
    g = linear(x, w["gate_kernel"]) + bias(w["gate_bias"])
    if use_bias:
        r = r + bias(w["bias"])
        square = square + bias(w["square_bias"])
    return r * g + square


def depthwise_nd(x, kernel, strides, padding, dilation, channels_first=False):
    """Depthwise N-d cross-correlation, float64: input channel c convolved
    with kernel[..., c, :], output channel c * multiplier + j.

    kernel: (*k, in, multiplier)."""
    axis = 1 if channels_first else -1
    x = np.asarray(x, np.float64)
    outputs = [
        conv_nd(np.take(x, [c], axis=axis), kernel[..., c:c + 1, :], strides,
                padding, dilation, channels_first)
        for c in range(kernel.shape[-2])
    ]
    return np.concatenate(outputs, axis=axis)
