"""Keras's own layer-test harness (`run_layer_test`, what Keras runs on its
own layers) on every quadratic layer, on every backend: symbolic and eager
calls, output shapes and dtypes, weight counts, serialization and config
round trips, training, mixed precision, masking and losses."""

import pytest

import keras_quadratic as kq


def _keras_test_case():
    """Keras's TestCase, whose `run_layer_test` has no public route
    (keras.src.testing is Keras's own test support; the test fails here, not
    silently, if Keras moves it)."""
    from keras.src.testing import TestCase

    case = TestCase(methodName="run_layer_test")
    case.setUp()
    return case


CASES = [
    # (class, init kwargs, input shape, output shape, trainable weights)
    (kq.QuadraticConv1D, dict(filters=4, kernel_size=3, padding="causal"),
     (2, 7, 3), (2, 7, 4), 6),
    (kq.QuadraticConv2D, dict(filters=4, kernel_size=3, strides=2,
                              activation="relu"),
     (2, 9, 9, 3), (2, 4, 4, 4), 6),
    (kq.QuadraticConv2D, dict(filters=4, kernel_size=(3, 2), use_bias=False,
                              padding="same", dilation_rate=2),
     (2, 8, 8, 3), (2, 8, 8, 4), 4),
    (kq.QuadraticConv3D, dict(filters=2, kernel_size=2),
     (2, 4, 4, 4, 3), (2, 3, 3, 3, 2), 6),
    (kq.CompactQuadraticConv1D, dict(filters=4, kernel_size=3),
     (2, 7, 3), (2, 5, 4), 3),
    (kq.CompactQuadraticConv2D, dict(filters=4, kernel_size=3,
                                     padding="same"),
     (2, 6, 6, 3), (2, 6, 6, 4), 3),
    (kq.CompactQuadraticConv3D, dict(filters=2, kernel_size=2,
                                     use_bias=False),
     (2, 4, 4, 4, 3), (2, 3, 3, 3, 2), 2),
    (kq.QuadraticDense, dict(units=5, activation="tanh"), (2, 3, 4),
     (2, 3, 5), 6),
    (kq.CompactQuadraticDense, dict(units=5), (2, 4), (2, 5), 3),
    (kq.QuadraticDepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2),
     (2, 6, 6, 3), (2, 4, 4, 6), 6),
    (kq.CompactQuadraticDepthwiseConv1D, dict(kernel_size=3, padding="same",
                                              data_format="channels_first"),
     (2, 3, 7), (2, 3, 7), 3),
    (kq.QuadraticSeparableConv2D, dict(filters=4, kernel_size=3,
                                       activation="relu"),
     (2, 6, 6, 3), (2, 4, 4, 4), 6),
    (kq.CompactQuadraticSeparableConv1D, dict(filters=4, kernel_size=3,
                                              quadratic_pointwise=True),
     (2, 7, 3), (2, 5, 4), 5),
]


@pytest.mark.parametrize(
    "cls,kwargs,input_shape,output_shape,trainable", CASES,
    ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_keras_run_layer_test(cls, kwargs, input_shape, output_shape,
                              trainable):
    _keras_test_case().run_layer_test(
        cls,
        init_kwargs=kwargs,
        input_shape=input_shape,
        expected_output_shape=output_shape,
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=0,
        expected_num_losses=0,
        supports_masking=issubclass(cls, kq.layers.BaseQuadraticDense),
    )


@pytest.mark.parametrize("cls", [kq.QuadraticConv2D, kq.QuadraticDense])
def test_keras_run_layer_test_with_relinear_penalty(cls):
    # One penalty per quadratic weight that has a non-zero coefficient.
    kwargs = dict(relinear_regularizer=kq.regularizers.ReLinearRegularizer(
        gate_l2=1e-3, square_l1=1e-3))
    if cls is kq.QuadraticConv2D:
        kwargs.update(filters=3, kernel_size=3, data_format="channels_first")
        shapes = (2, 3, 6, 6), (2, 3, 4, 4)
    else:
        kwargs.update(units=3)
        shapes = (2, 4), (2, 3)
    _keras_test_case().run_layer_test(
        cls, init_kwargs=kwargs, input_shape=shapes[0],
        expected_output_shape=shapes[1], expected_num_trainable_weights=6,
        expected_num_losses=4,
        supports_masking=cls is kq.QuadraticDense)


@pytest.mark.parametrize("cls,kwargs,input_shape,output_shape,trainable", [
    (kq.models.ReZero, {}, (2, 4, 4, 3), (2, 4, 4, 3), 1),
    (kq.models.ZeroPadShortcut, dict(filters=8), (2, 6, 6, 4), (2, 3, 3, 8),
     0),
])
def test_keras_run_layer_test_qresnet_layers(cls, kwargs, input_shape,
                                             output_shape, trainable):
    _keras_test_case().run_layer_test(
        cls, init_kwargs=kwargs, input_shape=input_shape,
        expected_output_shape=output_shape,
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=0, expected_num_losses=0,
        supports_masking=False,
        # ZeroPadShortcut has no weights to train
        run_training_check=bool(trainable))


@pytest.mark.parametrize("axis,input_shape", [(-1, (2, 4, 4, 3)),
                                              (1, (2, 3, 4, 4))])
def test_keras_run_layer_test_fused_batch_normalization(axis, input_shape):
    _keras_test_case().run_layer_test(
        kq.layers.BatchNormalization,
        init_kwargs=dict(axis=axis, momentum=0.9, epsilon=1e-5),
        input_shape=input_shape, expected_output_shape=input_shape,
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=2, expected_num_losses=0,
        supports_masking=True)
