"""Batch normalization that PyTorch computes in one kernel on torch."""

import math

import keras

from keras_quadratic.layers.conv import torch_is_compiling

_FUSED_INPUT_DTYPES = ("float16", "bfloat16", "float32")


@keras.saving.register_keras_serializable(package="keras_quadratic")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras's `BatchNormalization`, run by PyTorch's fused kernel on torch.

    It normalizes each channel `c` of its input `x`:

    `y[..., c] = gamma[c] * (x[..., c] - mean[c]) / sqrt(var[c] + epsilon)
    + beta[c]`

    In training, `mean` and `var` are the batch's (the biased variance), and
    the moving statistics follow
    `moving_mean = moving_mean * momentum + mean * (1 - momentum)` (and the
    same for `moving_variance`); in inference, `mean` and `var` are the
    moving statistics. This is `keras.layers.BatchNormalization`, with the
    same arguments and variables; its name is the same too, so that
    `.weights.h5` files (whose paths Keras derives from class names) are
    interchangeable between a model built with either.

    Keras's own layer computes it on torch as a dozen separate operations
    (two reductions for the moments, then the elementwise normalization),
    each a kernel of its own on a GPU, and as many again for the gradient.
    This layer hands the whole normalization, forward and backward, to
    `torch.nn.functional.batch_norm`, the function behind
    `torch.nn.BatchNorm2d`, which picks the kernel (cuDNN's, where PyTorch
    selects it on a GPU), with the input and its gradient in their own
    dtype (a `mixed_bfloat16` input is not cast to float32 and back; the
    statistics are still computed in float32). A channels-last input of
    rank 4 or 5 is handed over as its transposed view, as channels-first in
    channels-last memory, without a copy. The results equal Keras's up to
    rounding for normalized data; for data far from zero PyTorch's variance
    is the more accurate one (Keras's torch backend computes
    `E[x^2] - E[x]^2`, which loses the variance of data around 3000 with a
    standard deviation of 1 in float32).

    It computes Keras's way on TensorFlow and JAX (whose compilers fuse it
    themselves), and on torch where the kernel does not apply or would
    need copies: with a mask, `renorm`, variables that are not float32,
    input dtypes other than float16, bfloat16 and float32, channels on an
    axis other than 1 or the last of a rank-4 or rank-5 input, a single
    value per channel in training, moving statistics that require a
    gradient (in a functional training loop), or under torch.compile
    (whose Inductor fuses Keras's computation itself).

    Args:
        axis: The channels axis (the one not normalized over): -1 for
            `channels_last` data, 1 for `channels_first`.
        momentum: Momentum of the moving statistics.
        epsilon: Small float added to the variance.
        center: Whether to add the offset `beta`.
        scale: Whether to multiply by `gamma`.
        beta_initializer: Initializer of `beta`.
        gamma_initializer: Initializer of `gamma`.
        moving_mean_initializer: Initializer of the moving mean.
        moving_variance_initializer: Initializer of the moving variance.
        beta_regularizer: Optional regularizer of `beta`.
        gamma_regularizer: Optional regularizer of `gamma`.
        beta_constraint: Optional constraint of `beta`.
        gamma_constraint: Optional constraint of `gamma`.
        renorm: Whether to use batch renormalization (Keras's computation).
        renorm_clipping: Clipping of the renormalization corrections, as in
            `keras.layers.BatchNormalization`.
        renorm_momentum: Momentum of the renormalization statistics.
        synchronized: Synchronize the statistics across replicas
            (TensorFlow only, as in `keras.layers.BatchNormalization`).
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Input shape:
        Arbitrary, with the channels on `axis`.

    Output shape:
        The input's.

    Example:

    >>> import numpy as np
    >>> layer = BatchNormalization(momentum=0.9, epsilon=1e-5)
    >>> x = np.random.default_rng(0).normal(3.0, 2.0, (8, 4, 4, 3))
    >>> y = keras.ops.convert_to_numpy(layer(x, training=True))
    >>> bool(np.allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5))
    True
    >>> bool(np.allclose(y.std(axis=(0, 1, 2)), 1.0, atol=1e-3))
    True
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fused_kernel_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import torch

        rank = len(inputs.shape)
        axis = self.axis % rank
        x = keras.ops.convert_to_tensor(inputs)  # a stateless call's array
        if axis != 1:
            # The channels-first view of a rank-4 or rank-5 channels-last
            # input (for NHWC memory, an NCHW tensor in channels-last
            # memory format).
            x = torch.movedim(x, axis, 1)
        gamma = self.gamma.value if self.scale else None
        beta = self.beta.value if self.center else None
        if training and self.trainable:
            # momentum 1 writes the batch's mean and unbiased variance into
            # the two buffers (the kernel's only route out for them).
            mean = torch.zeros_like(self.moving_mean.value)
            unbiased_variance = torch.zeros_like(self.moving_variance.value)
            outputs = torch.nn.functional.batch_norm(
                x, mean, unbiased_variance, gamma, beta, training=True,
                momentum=1.0, eps=self.epsilon)
            count = x.numel() // x.shape[1]
            variance = unbiased_variance * ((count - 1) / count)
            self.moving_mean.assign(
                self.moving_mean.value * self.momentum
                + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance.value * self.momentum
                + variance * (1.0 - self.momentum))
        else:
            outputs = torch.nn.functional.batch_norm(
                x, self.moving_mean.value, self.moving_variance.value, gamma,
                beta, training=False, eps=self.epsilon)
        if axis != 1:
            outputs = torch.movedim(outputs, 1, axis)
        return keras.ops.cast(outputs, self.compute_dtype)

    def _fused_kernel_applies(self, inputs, training, mask):
        if keras.backend.backend() != "torch" or mask is not None:
            return False
        if torch_is_compiling():
            # Inductor fuses Keras's computation itself, and the
            # channels-first view trips its stride analysis for a second,
            # dynamic image size (torch 2.13).
            return False
        if self.renorm or self.synchronized:
            return False
        if keras.backend.standardize_dtype(inputs.dtype) not in (
                _FUSED_INPUT_DTYPES):
            return False
        if any(keras.backend.standardize_dtype(v.dtype) != "float32"
               for v in self.weights):
            return False
        rank = len(inputs.shape)
        if self.axis % rank != 1 and not (
                rank in (4, 5) and self.axis % rank == rank - 1):
            # The channels-first view of the input would not be contiguous
            # in any memory format: torch would copy it, and the output.
            return False
        if training and self.trainable:
            # PyTorch refuses a batch of one value per channel (Keras gives
            # a variance of 0).
            return math.prod(inputs.shape) > inputs.shape[self.axis]
        # The kernel takes the moving statistics as buffers, which it does
        # not differentiate.
        return not (self.moving_mean.value.requires_grad
                    or self.moving_variance.value.requires_grad)
