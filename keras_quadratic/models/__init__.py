from keras_quadratic.models.qresnet import QResNet
from keras_quadratic.models.qresnet import preprocess_input
from keras_quadratic.models.qresnet import ReZero
from keras_quadratic.models.qresnet import ZeroPadShortcut
