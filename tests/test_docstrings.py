"""Every public class and function documents itself as Keras's do (Args and
an example), and the examples in the docstrings run, on every backend."""

import doctest
import importlib
import inspect

import pytest

import keras_quadratic as kq

PUBLIC = [
    kq.QuadraticConv1D, kq.QuadraticConv2D, kq.QuadraticConv3D,
    kq.CompactQuadraticConv1D, kq.CompactQuadraticConv2D,
    kq.CompactQuadraticConv3D, kq.QuadraticDense, kq.CompactQuadraticDense,
    kq.models.QResNet, kq.optimizers.ReLinearOptimizer,
    kq.regularizers.ReLinearRegularizer, kq.regularizers.add_weight_decay,
    kq.callbacks.QuadraticMonitor, kq.quadratize, kq.models.ReZero,
    kq.models.ZeroPadShortcut,
]


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda o: o.__name__)
def test_keras_style_docstring_and_explicit_signature(obj):
    doc = inspect.getdoc(obj)
    assert "Args:" in doc and ">>> " in doc, obj
    # explicit arguments, never a catch-all *args
    parameters = inspect.signature(obj).parameters
    assert not [p for p in parameters.values()
                if p.kind is inspect.Parameter.VAR_POSITIONAL], obj
    documented = doc.split("Args:")[1]
    for name, p in parameters.items():
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            assert f"{name}:" in documented or f"{name}," in documented, (
                obj, name)


@pytest.mark.parametrize("name", [
    "layers.conv", "layers.dense", "callbacks", "quadratize", "regularizers",
    "optimizers", "models.qresnet"])
def test_docstring_examples_run(name):
    # the module (kq.quadratize is the function of the same name)
    module = importlib.import_module(f"keras_quadratic.{name}")
    result = doctest.testmod(
        module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
