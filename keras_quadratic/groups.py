"""The ReLinear groups: which weights are a quadratic layer's gate or
square weights.

Quadratic layers tag the variables they create; the ReLinear optimizer,
regularizers and monitor read that tag rather than guessing from names.
This module imports nothing of the package: the layers, the regularizers
and the optimizers all depend on it, never the other way round.
"""

GATE = "gate"
SQUARE = "square"
_GROUP_ATTRIBUTE = "_keras_quadratic_group"
_LAYER_ATTRIBUTE = "_keras_quadratic_layer"


def quadratic_group(variable):
    """Returns "gate", "square" or None: the ReLinear group a layer declared.

    Quadratic layers tag the variables they create; the ReLinear optimizer
    and the monitor read that tag rather than guessing from names.
    """
    return getattr(variable, _GROUP_ATTRIBUTE, None)


def quadratic_layer_of(variable):
    """The quadratic layer that created a tagged (gate or square) variable,
    else None: how the monitor finds quadratic layers at any nesting."""
    return getattr(variable, _LAYER_ATTRIBUTE, None)


def tag(variable, group, layer):
    """Marks `variable` as `layer`'s weight of ReLinear group `group`."""
    setattr(variable, _GROUP_ATTRIBUTE, group)
    setattr(variable, _LAYER_ATTRIBUTE, layer)
    return variable
