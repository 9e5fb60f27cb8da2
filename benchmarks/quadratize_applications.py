"""quadratize on every keras.applications model: how many layers converted,
how many were left (and why), and the largest output difference from the
original at initialization (inference mode).

Each model is built with weights=None, 10 classes, logits out, at its
smallest valid input (32x32, 71x71 for Xception, 75x75 for the Inception
models), and fed random images (uniform in [0, 255]).

    KERAS_BACKEND=jax python benchmarks/quadratize_applications.py
    KERAS_BACKEND=jax python benchmarks/quadratize_applications.py --models ResNet50 Xception --neuron compact
"""

import argparse
import inspect
import json
import os
import time
import warnings

import keras
import numpy as np

import keras_quadratic as kq
from keras_quadratic.quadratize import _LINEAR_MAP_LAYERS

# Input sizes below 32x32 that keras.applications refuses for these.
SMALLEST_INPUT = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}


def application_names():
    """Every model constructor keras.applications exports."""
    return sorted(
        name for name in dir(keras.applications)
        if name[0].isupper() and callable(getattr(keras.applications, name)))


def build_application(name):
    """`name` from keras.applications: weights=None, 10 classes, logits
    (where the constructor has `classifier_activation`), smallest input."""
    constructor = getattr(keras.applications, name)
    size = SMALLEST_INPUT.get(name, 32)
    kwargs = dict(weights=None, input_shape=(size, size, 3), classes=10)
    if "classifier_activation" in inspect.signature(constructor).parameters:
        kwargs["classifier_activation"] = None
    return constructor(**kwargs)


def _layers(model):
    """Every layer at any nesting (nested models' layers, not the models)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def compare(model, neuron="quadratic", seed=0):
    """quadratize(model) and what it did: a dict of counts, the layers left
    as they were and the largest output difference on random images."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quadratic = kq.quadratize(model, neuron=neuron)
    left = [str(w.message) for w in caught
            if "quadratize: left unchanged" in str(w.message)]
    converted = sum(isinstance(layer, (kq.layers.QuadraticLayer,
                                       kq.layers.BaseQuadraticSeparableConv))
                    for layer in _layers(quadratic))
    candidates = sum(isinstance(layer, _LINEAR_MAP_LAYERS)
                     for layer in _layers(model))
    shape = (2,) + tuple(model.input_shape[1:])
    x = np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = keras.ops.convert_to_numpy(quadratic(x, training=False))
    scale = float(np.max(np.abs(expected)))
    return {
        "layers": len(list(_layers(model))),
        "linear_map_layers": candidates,
        "converted": converted,
        "left": candidates - converted,
        "left_unchanged": left,
        "max_abs_difference": float(np.max(np.abs(actual - expected))),
        "max_abs_output": scale,
        # relative to the largest output: random-init logits range from
        # 1e-11 (MobileNetV3) to 1e3
        "relative_difference": float(
            np.max(np.abs(actual - expected)) / (scale or 1.0)),
        "params": int(model.count_params()),
        "quadratic_params": int(quadratic.count_params()),
    }, quadratic


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=None,
                   help="keras.applications names (default: all)")
    p.add_argument("--neuron", choices=kq.quadratize.__globals__["NEURONS"],
                   default="quadratic")
    p.add_argument("--output", default=None,
                   help="also write the rows as JSON here")
    args = p.parse_args(argv)
    names = args.models or application_names()
    print(f"backend {keras.backend.backend()}, neuron {args.neuron}, "
          f"{len(names)} models", flush=True)
    print("| model | input | layers | conv/dense layers | converted | left "
          "| max abs output difference | max abs output | relative "
          "| seconds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: |")
    rows = []
    for name in names:
        start = time.perf_counter()
        model = build_application(name)
        row, _ = compare(model, args.neuron)
        row.update(model=name, input=model.input_shape[1],
                   seconds=round(time.perf_counter() - start, 1))
        rows.append(row)
        print(f"| {name} | {row['input']} | {row['layers']} | "
              f"{row['linear_map_layers']} | {row['converted']} | "
              f"{row['left']} | {row['max_abs_difference']:.2e} | "
              f"{row['max_abs_output']:.2e} | "
              f"{row['relative_difference']:.1e} | {row['seconds']} |",
              flush=True)
        for message in row["left_unchanged"]:
            print(f"    {name}: {message}")
        keras.backend.clear_session()
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)),
                    exist_ok=True)
        with open(args.output, "w") as f:
            json.dump({"backend": keras.backend.backend(),
                       "neuron": args.neuron, "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
