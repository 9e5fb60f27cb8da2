"""keras-quadratic: quadratic neural networks and ReLinear for Keras 3."""

from keras_quadratic import callbacks
from keras_quadratic import devices
from keras_quadratic import distribute
from keras_quadratic import layers
from keras_quadratic import models
from keras_quadratic import optimizers
from keras_quadratic import regularizers
from keras_quadratic.layers import CompactQuadraticConv1D
from keras_quadratic.layers import CompactQuadraticConv2D
from keras_quadratic.layers import CompactQuadraticConv3D
from keras_quadratic.layers import CompactQuadraticDense
from keras_quadratic.layers import CompactQuadraticDepthwiseConv1D
from keras_quadratic.layers import CompactQuadraticDepthwiseConv2D
from keras_quadratic.layers import CompactQuadraticSeparableConv1D
from keras_quadratic.layers import CompactQuadraticSeparableConv2D
from keras_quadratic.layers import QuadraticConv1D
from keras_quadratic.layers import QuadraticConv2D
from keras_quadratic.layers import QuadraticConv3D
from keras_quadratic.layers import QuadraticDense
from keras_quadratic.layers import QuadraticDepthwiseConv1D
from keras_quadratic.layers import QuadraticDepthwiseConv2D
from keras_quadratic.layers import QuadraticSeparableConv1D
from keras_quadratic.layers import QuadraticSeparableConv2D
from keras_quadratic.quadratize import quadratize

__version__ = "0.2.0"
