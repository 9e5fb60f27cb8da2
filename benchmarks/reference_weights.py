"""The PyTorch reference's weights (benchmarks/torch_reference.py) in
keras-quadratic's QResNet: which `state_dict` entry is which Keras variable.

NumPy and Keras only, no torch: a Keras process (JAX or TensorFlow on a
GPU, where torch loaded first could take the CUDA libraries) reads the
reference's weights from a file that the PyTorch process wrote.

    copy_to_keras(dict(np.load("weights.npz")), model)
"""

import numpy as np


def keras_counterparts(model):
    """(state_dict name, Keras variable) for every weight and batch-norm
    statistic of `model` (`keras_quadratic.models.QResNet`, either neuron,
    the reference's depth), in network order. A `ValueError` unless they
    are all of `model`'s weights (e.g. `rezero`'s, which the reference
    lacks)."""
    import keras

    import keras_quadratic as kq

    convs = [layer for layer in model.layers if isinstance(
        layer, (keras.layers.Conv2D, kq.layers.QuadraticConv2D))]
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    blocks = (len(convs) - 1) // 2
    if len(convs) != 2 * blocks + 1 or len(norms) != len(convs):
        raise ValueError(
            f"`model` has {len(convs)} convolutions and {len(norms)} batch "
            "norms: not the reference's ResNet (a stem, then two of each "
            "per block)")
    conv_names = ["conv1"] + [f"blocks.{i}.conv{j}"
                              for i in range(blocks) for j in (1, 2)]
    norm_names = ["bn1"] + [f"blocks.{i}.bn{j}"
                            for i in range(blocks) for j in (1, 2)]
    pairs = []
    for name, layer in zip(conv_names, convs):
        if isinstance(layer, kq.layers.QuadraticConv2D):
            for part, kernel, bias in (("conv_r", "kernel", "bias"),
                                       ("conv_g", "gate_kernel", "gate_bias"),
                                       ("conv_b", "square_kernel",
                                        "square_bias")):
                pairs += [(f"{name}.{part}.weight", getattr(layer, kernel)),
                          (f"{name}.{part}.bias", getattr(layer, bias))]
        else:
            pairs.append((f"{name}.weight", layer.kernel))
    for name, layer in zip(norm_names, norms):
        pairs += [(f"{name}.weight", layer.gamma),
                  (f"{name}.bias", layer.beta),
                  (f"{name}.running_mean", layer.moving_mean),
                  (f"{name}.running_var", layer.moving_variance)]
    classifier = model.get_layer("classifier")
    pairs += [("linear.weight", classifier.kernel),
              ("linear.bias", classifier.bias)]
    paired = {id(variable) for _, variable in pairs}
    unpaired = [w.path for w in model.weights if id(w) not in paired]
    if unpaired or len(paired) != len(pairs):
        raise ValueError(f"`model`'s weights {unpaired} have no counterpart "
                         "in the reference")
    return pairs


def as_keras(name, value):
    """The `state_dict` entry `name` in Keras's layout, as a NumPy copy:
    conv kernels (out, in, h, w) -> (h, w, in, out), the classifier's
    (out, in) -> (in, out)."""
    value = np.asarray(value)
    if value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)
    elif name == "linear.weight":
        value = value.T
    return np.array(value)


def copy_to_keras(state, model):
    """Gives `model` (see `keras_counterparts`) the reference's weights and
    batch-norm statistics from `state`, name -> array (a `state_dict` as
    NumPy, or the npz of one)."""
    for name, variable in keras_counterparts(model):
        variable.assign(as_keras(name, state[name]))
