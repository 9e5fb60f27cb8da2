"""Every public class and function documents itself as Keras's do (Args and
an example), and the examples in the docstrings run, on every backend."""

import doctest
import importlib
import inspect

import pytest

import keras_quadratic as kq

# Abstract bases (the public classes document their arguments) and helper
# functions that are not layers, models, optimizers, regularizers,
# callbacks or converters.
NOT_COVERED = {
    "QuadraticLayer", "QuadraticConvolution", "BaseQuadraticConv",
    "BaseQuadraticDense", "BaseQuadraticDepthwiseConv",
    "BaseQuadraticSeparableConv",
    "quadratic_group", "quadratic_layer_of", "quadratic_layers",
    "layer_norms", "layer_paths", "relinear_metrics", "ReLinear",
}


def _public():
    """Every class and function the package exports, from its modules'
    public names: a new export is covered until it is listed above."""
    found = {}
    for module in (kq, kq.layers, kq.models, kq.optimizers, kq.regularizers,
                   kq.callbacks):
        for name in dir(module):
            obj = getattr(module, name)
            if (name.startswith("_") or name in NOT_COVERED
                    or not (inspect.isclass(obj) or inspect.isfunction(obj))
                    or not obj.__module__.startswith("keras_quadratic")):
                continue
            found[obj.__qualname__] = obj
    return [found[name] for name in sorted(found)]


PUBLIC = _public()
SECTIONS = ("Input shape:", "Output shape:", "Example:", "Returns:",
            "Raises:")


def _documented_arguments(doc):
    """The names of the `Args:` section's entries (`name:` or
    `name, other:` at the entries' indentation)."""
    lines = doc.split("Args:", 1)[1].splitlines()[1:]
    indent = len(lines[0]) - len(lines[0].lstrip())
    names = set()
    for line in lines:
        if line.strip() in SECTIONS:
            break
        if line.strip() and len(line) - len(line.lstrip()) == indent:
            entry = line.strip().split(":", 1)[0]
            names.update(n.strip().lstrip("*") for n in entry.split(","))
    return names


def test_the_public_api_is_all_covered():
    names = {obj.__name__ for obj in PUBLIC}
    assert {"QuadraticConv2D", "CompactQuadraticDense", "QResNet",
            "ReLinearOptimizer", "ReLinearRegularizer", "QuadraticMonitor",
            "quadratize", "add_weight_decay", "ReZero"} <= names


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda o: o.__name__)
def test_keras_style_docstring_and_explicit_signature(obj):
    doc = inspect.getdoc(obj)
    assert "Args:" in doc and ">>> " in doc, obj
    # explicit arguments, never a catch-all *args
    parameters = inspect.signature(obj).parameters
    assert not [p for p in parameters.values()
                if p.kind is inspect.Parameter.VAR_POSITIONAL], obj
    expected = {name for name, p in parameters.items()
                if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    assert _documented_arguments(doc) == expected, obj


@pytest.mark.parametrize("name", [
    "layers.conv", "layers.dense", "layers.depthwise_conv",
    "layers.separable_conv", "callbacks", "cuda_graph", "quadratize",
    "regularizers", "optimizers", "models.qresnet"])
def test_docstring_examples_run(name):
    # the module (kq.quadratize is the function of the same name)
    module = importlib.import_module(f"keras_quadratic.{name}")
    result = doctest.testmod(
        module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
