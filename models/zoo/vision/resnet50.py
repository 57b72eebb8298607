"""resnet50: the seed's ResNet50 (001 §4.1, image classification), ``keras.applications.ResNet50``
with 1000 classes on 224x224x3, UNTRAINED (``weights=None``).

This model is a latency/compression workload, not a trained classifier. Its metric is the
top-1 agreement (models.metrics.AGREEMENT) of a variant's predictions with the fp32 model's
own top-1 predictions on fixed procedural inputs: ``load_data`` builds the fp32 model and
stores its top-1 classes as ``split.y``, so the fp32 model scores 1.0 by construction and
an exported/compressed variant scores the fraction of inputs where it still agrees.

Seed changes and why:
- The seed loads ``weights='imagenet'`` (a 100 MB download) and classifies ``elephant.jpg``.
  Offline, the weights are random: ``build`` calls ``keras.utils.set_random_seed(init_seed)``
  first, so every build gives the same weights (the fp32 labels stay valid across builds,
  save/reload and processes).
- Inputs are procedural coloured shapes (models/datasets/shapes.py) rendered at 224x224,
  scaled to 0..255 and put through ``resnet50.preprocess_input`` (caffe mode: BGR, ImageNet
  mean subtracted), the preprocessing the seed uses. The input layer is named "image".
- A randomly initialised ResNet50 maps EVERY input to the same class (its pooled features
  share one large common component), which would make top-1 agreement vacuous. ``build``
  therefore centres the classifier deterministically: the "predictions" bias is set to
  ``-W^T mean(features)`` over a few fixed probe images (not the evaluated ones), after which
  top-1 depends on the input. Turn off with ``centre_classifier=False``.
- Tiny config: 32x32x3 input, 10 classes, and keras.applications' own ResNet builder with two
  narrow bottleneck stages (8 and 16 filters, one block each) instead of ResNet50's four stages:
  the same layer types (7x7 stem, Conv-BN-ReLU bottlenecks with projection shortcuts, Add, GAP,
  softmax) at ~30k parameters, so the suite does not move a 95 MB file through every test.
"""
import numpy as np
from tf_keras.src.applications import resnet

from models.backend import keras
from models.datasets.shapes import shapes_images
from models.metrics import AGREEMENT
from models.registry import register
from models.spec import ModelSpec, Split, Splits

PROBE_SEED = 424242  # probe images for centring the classifier; never evaluated


def images(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` procedural RGB images, ResNet50-preprocessed (float32, BGR, mean-subtracted)."""
    x, _ = shapes_images(n, size, seed)
    return keras.applications.resnet50.preprocess_input(x * 255.0).astype("float32")


def build(config: dict):
    keras.utils.set_random_seed(config["init_seed"])
    size = config["size"]
    inputs = keras.Input((size, size, 3), name="image")
    if config.get("stages"):  # tiny: the same stem, bottleneck blocks and head, with fewer and narrower stages
        def stacks(x):
            for i, (filters, blocks) in enumerate(config["stages"]):
                x = resnet.stack1(x, filters, blocks, stride1=1 if i == 0 else 2, name=f"conv{i + 2}")
            return x

        model = resnet.ResNet(stacks, False, True, "resnet50_tiny", weights=None, input_tensor=inputs,
                              input_shape=(size, size, 3), classes=config["classes"])
    else:
        model = keras.applications.ResNet50(weights=None, input_tensor=inputs, input_shape=(size, size, 3),
                                            classes=config["classes"])
    if config.get("centre_classifier", True):
        features = keras.Model(model.input, model.get_layer("avg_pool").output)
        mean = features(images(config["probes"], size, PROBE_SEED), training=False).numpy().mean(0)
        head = model.get_layer("predictions")
        kernel, _ = head.get_weights()
        head.set_weights([kernel, (-(mean @ kernel)).astype("float32")])
    return model


def load_data(config: dict, seed: int) -> Splits:
    """Fixed inputs per split; labels are the fp32 model's own top-1 classes."""
    model = build(config)
    splits = []
    for k, n in enumerate(config["samples"]):  # train, val, test
        x = images(n, config["size"], 1000 + 10 * seed + k)
        # test is predicted in one batch of <= 256, exactly as training.evaluate predicts it
        y = model.predict(x, batch_size=256, verbose=0).argmax(-1).astype("int64")
        splits.append(Split(x, y))
    return Splits(*splits)


register(ModelSpec(
    name="resnet50",
    seed_doc="001 §4.1 (ResNet50, image classification)",
    task="untrained ImageNet-shaped classifier (1000 classes): latency workload, top-1 agreement with fp32",
    build=build,
    load_data=load_data,
    metric=AGREEMENT,
    quality_bar=0.99,
    config={"size": 224, "classes": 1000, "init_seed": 1, "probes": 8, "samples": (16, 8, 32),
            "centre_classifier": True},
    tiny={"size": 32, "classes": 10, "probes": 4, "samples": (8, 4, 8), "stages": ((8, 1), (16, 1))},
    trainable=False,
    preprocessing="RGB image 0..255 -> keras.applications.resnet50.preprocess_input (BGR, ImageNet mean subtracted)",
    notes=__doc__,
))
