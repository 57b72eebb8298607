"""Model-specific checks for the vision zoo models: the procedural datasets and a few structural facts."""
import numpy as np
import pytest

import models
from conftest import tiny_trained
from models.datasets.ct_patches import ct_patches, ct_patches_images
from models.datasets.shapes import CLASSES, shapes, shapes_images


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_are_deterministic_balanced_and_sized(size):
    x, y = shapes_images(50, size, seed=3)
    x2, y2 = shapes_images(50, size, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.shape == (50, size, size, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y, minlength=len(CLASSES)).tolist() == [5] * len(CLASSES)
    assert not np.array_equal(x, shapes_images(50, size, seed=4)[0])


def test_shapes_splits_are_stratified_and_non_empty():
    splits = shapes(100, 32, seed=0)
    for split in (splits.train, splits.val, splits.test):
        assert len(split) > 0 and set(np.unique(split.y)) == set(range(10))


def test_ct_patches_are_deterministic_binary_and_grey_rgb():
    x, y = ct_patches_images(12, 128, seed=1)
    x2, _ = ct_patches_images(12, 128, seed=1)
    np.testing.assert_array_equal(x, x2)
    assert x.shape == (12, 128, 128, 3) and x.dtype == np.float32
    assert set(y.tolist()) == {0, 1} and y.sum() == 6
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # a grey CT window repeated over RGB
    splits = ct_patches(40, 128, seed=0, val=0.1, test=0.2)
    assert all(len(s) > 0 for s in (splits.train, splits.val, splits.test))


def test_nodules_add_a_bright_blob():
    # same random stream up to the nodule: a positive patch is never darker on average
    x, y = ct_patches_images(40, 128, seed=2)
    assert x[y == 1].max(axis=(1, 2, 3)).mean() > x[y == 0].max(axis=(1, 2, 3)).mean()


def test_resnet_uses_the_seed_residual_block():
    spec = models.get("resnet")
    model = spec.build(spec.resolve_config(tiny=True))
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Add", "BatchNormalization", "Conv2D", "GlobalAveragePooling2D"} <= kinds


def test_nodule_cnn_is_binary_sigmoid():
    spec = models.get("nodule_cnn")
    model = spec.build(spec.resolve_config(tiny=True))
    assert spec.loss == "binary_crossentropy"
    assert model.output_shape == (None, 1) and model.layers[-1].activation.__name__ == "sigmoid"
    assert any(type(layer).__name__ == "Dropout" for layer in model.layers)


def test_resnet50_labels_are_its_own_input_dependent_top1():
    trained = tiny_trained("resnet50")
    assert trained.metric == 1.0  # fp32 agrees with itself by construction
    splits = trained.splits()
    labels = np.concatenate([splits.train.y, splits.val.y, splits.test.y])
    assert len(np.unique(labels)) > 1, "the centred classifier should not map every input to one class"
    model = trained.load()
    assert model.get_layer("conv1_conv") is not None and model.get_layer("conv2_block1_add") is not None
    full = models.get("resnet50").resolve_config()
    assert "stages" not in full and full["size"] == 224  # the full config is keras.applications.ResNet50 itself
