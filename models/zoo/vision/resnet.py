"""resnet: the seed's residual network (000 §3): a Conv-BN-ReLU stem, residual blocks
(Conv-BN-ReLU x2 + Add), global average pooling and a softmax classifier, on 28x28x1.

Seed changes: the seed code does not run. It imports a ``Shortcut`` layer that does
not exist, and adds a functional-API block to a ``Sequential`` model; there is no
input, head, data or training. Here the model is built with the functional API: a
stem conv, ``config["blocks"]`` residual blocks per stage exactly as the seed's
``residual_block`` (Conv-BN-ReLU, Conv-BN-ReLU, Add with the block input), and
between stages a strided Conv-BN-ReLU that halves the resolution and widens the
channels (so the identity shortcut always matches shapes), then GAP + Dense softmax.
Task: scikit-learn's 8x8 digits resized to 28x28 (offline MNIST stand-in).
"""
from models.backend import keras
from models.datasets.sklearn_data import digits_28
from models.metrics import ACCURACY
from models.registry import register
from models.spec import ModelSpec

layers = keras.layers
# BN moving statistics follow the weights quickly: the train split has only ~1,000 images


def conv_bn_relu(x, filters: int, strides: int = 1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.Activation("relu")(x)


def residual_block(inputs, filters: int):
    """The seed's block: two Conv-BN-ReLU and an identity shortcut added at the end."""
    x = conv_bn_relu(inputs, filters)
    x = conv_bn_relu(x, filters)
    return layers.Add()([x, inputs])


def build(config: dict):
    inputs = keras.Input((28, 28, 1), name="image")
    widths = config["filters"]
    x = conv_bn_relu(inputs, widths[0])
    for stage, filters in enumerate(widths):
        if stage:  # downsample + widen between stages
            x = conv_bn_relu(x, filters, strides=2)
        for _ in range(config["blocks"]):
            x = residual_block(x, filters)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet")


register(ModelSpec(
    name="resnet",
    seed_doc="000 §3 (ResNet)",
    task="handwritten digit classification (10 classes)",
    build=build,
    load_data=lambda config, seed: digits_28(seed),
    metric=ACCURACY,
    quality_bar=0.93,
    config={"filters": (16, 32), "blocks": 1, "epochs": 15, "batch_size": 32},
    tiny={"filters": (4, 8), "blocks": 1, "epochs": 1},
    labels=tuple(str(i) for i in range(10)),
    preprocessing="grayscale 28x28, pixel values scaled to [0, 1]",
    notes=__doc__,
))
