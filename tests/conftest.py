# torch first: with two backends in one process it must be imported first.
try:
    import torch  # noqa: F401
except ImportError:
    pass

import keras
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _isolate_keras_state():
    """Each test starts with a fresh name scope, float32 and channels_last."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
    keras.config.set_image_data_format("channels_last")


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def random(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(
        "float32"
    )
