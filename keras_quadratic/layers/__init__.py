from keras_quadratic.groups import quadratic_group
from keras_quadratic.layers.base import QuadraticLayer
from keras_quadratic.layers.conv import BaseQuadraticConv
from keras_quadratic.layers.conv import QuadraticConvolution
from keras_quadratic.layers.conv import CompactQuadraticConv1D
from keras_quadratic.layers.conv import CompactQuadraticConv2D
from keras_quadratic.layers.conv import CompactQuadraticConv3D
from keras_quadratic.layers.conv import QuadraticConv1D
from keras_quadratic.layers.conv import QuadraticConv2D
from keras_quadratic.layers.conv import QuadraticConv3D
from keras_quadratic.layers.dense import BaseQuadraticDense
from keras_quadratic.layers.dense import CompactQuadraticDense
from keras_quadratic.layers.dense import QuadraticDense
from keras_quadratic.layers.depthwise_conv import BaseQuadraticDepthwiseConv
from keras_quadratic.layers.depthwise_conv import (
    CompactQuadraticDepthwiseConv1D,
)
from keras_quadratic.layers.depthwise_conv import (
    CompactQuadraticDepthwiseConv2D,
)
from keras_quadratic.layers.depthwise_conv import QuadraticDepthwiseConv1D
from keras_quadratic.layers.depthwise_conv import QuadraticDepthwiseConv2D
from keras_quadratic.layers.normalization import BatchNormalization
from keras_quadratic.layers.separable_conv import BaseQuadraticSeparableConv
from keras_quadratic.layers.separable_conv import (
    CompactQuadraticSeparableConv1D,
)
from keras_quadratic.layers.separable_conv import (
    CompactQuadraticSeparableConv2D,
)
from keras_quadratic.layers.separable_conv import QuadraticSeparableConv1D
from keras_quadratic.layers.separable_conv import QuadraticSeparableConv2D
