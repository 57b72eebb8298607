"""Model-specific checks for gan, diffusion, yolo, vqa_fusion, av_fusion and their data generators."""
import numpy as np
import pytest

import models
from models.backend import keras
from models.datasets import audiovisual, scenes
from models.training import keras_predict
from models.zoo.vision import diffusion
from models.zoo.vision import gan
from models.zoo.vision import yolo
from conftest import tiny_trained


# ----------------------------------------------------------------------------------------------- data


def test_detection_scenes_are_deterministic_and_valid():
    a_img, a_obj = scenes.detection_scenes(20, 64, seed=3, grid=8)
    b_img, b_obj = scenes.detection_scenes(20, 64, seed=3, grid=8)
    np.testing.assert_array_equal(a_img, b_img)
    assert a_img.shape == (20, 64, 64, 3) and 0 <= a_img.min() and a_img.max() <= 1
    for (boxes, classes), (boxes2, _) in zip(a_obj, b_obj):
        np.testing.assert_array_equal(boxes, boxes2)
        assert 1 <= len(boxes) <= 3 and ((boxes >= 0) & (boxes <= 1)).all()
        centres = ((boxes[:, :2] + boxes[:, 2:]) / 2 * 8).astype(int)
        assert len({tuple(c) for c in centres}) == len(boxes)  # one object per grid cell
        assert set(classes) <= {0, 1, 2}


def test_vqa_scenes_are_balanced_and_encoded():
    images, questions, answers = scenes.vqa_scenes(200, 24, seed=1)
    assert images.shape == (200, 24, 24, 3) and questions.shape == (200, scenes.QUESTION_LENGTH)
    assert 0.4 < answers.mean() < 0.6
    q = scenes.encode_question("is there a red circle ?")
    assert [scenes.VOCAB[i] for i in q if i] == ["is", "there", "a", "red", "circle", "?"]
    again = scenes.vqa_scenes(200, 24, seed=1)
    np.testing.assert_array_equal(questions, again[1])


def test_audiovisual_pairs():
    images, audio, labels = audiovisual.pairs(60, 16, seed=2)
    assert images.shape == (60, 16, 16, 3)
    assert audio.shape == (60, audiovisual.N_FRAMES, audiovisual.N_BINS) and np.isfinite(audio).all()
    assert 0.3 < labels.mean() < 0.7
    np.testing.assert_array_equal(audio, audiovisual.pairs(60, 16, seed=2)[1])
    # the chirp's loudest bin rises over time; a tone's stays put
    rng = np.random.default_rng(0)

    def peaks(cls):  # loudest bin of the frames where the sound is on
        spec = audiovisual.spectrogram(audiovisual.sound(rng, cls))
        on = np.flatnonzero(spec.max(1) > 0.5 * (spec.max() + np.median(spec)))
        return on, spec[on].argmax(1)

    frames, bins = peaks(2)
    assert np.corrcoef(frames, bins)[0, 1] > 0.9
    assert np.median(peaks(0)[1]) < 8 and np.median(peaks(1)[1]) > 18


# ------------------------------------------------------------------------------------------------ gan


def test_gan_judge_separates_digits_from_junk():
    d = models.get("gan").load_data(models.get("gan").resolve_config(tiny=True), 0)
    real = d.test.y[:100]
    rng = np.random.default_rng(0)
    assert gan.digit_confidence(None, real) > 0.8
    assert gan.digit_confidence(None, rng.uniform(-1, 1, real.shape)) < 0.2
    assert gan.digit_confidence(None, -np.ones_like(real)) < 0.2
    assert gan.digit_coverage(real) == 10


def test_gan_generator_maps_latents_to_images():
    trained = tiny_trained("gan")
    model = trained.load()
    split = trained.splits().test
    images = keras_predict(model)(split.x)
    assert images.shape == (len(split), 28, 28, 1)
    assert images.min() >= -1 and images.max() <= 1
    untrained = models.get("gan").build(models.get("gan").resolve_config())
    assert models.get("gan").score(keras_predict(untrained), split, trained.config) < 0.2


# ------------------------------------------------------------------------------------------ diffusion


def test_diffusion_schedule_and_pairs():
    betas, alphas, abar = diffusion.schedule(100)
    assert np.all(np.diff(abar) < 0) and abar[-1] < 1e-3 and abar[0] > 0.99
    assert np.all((diffusion.schedule(10)[0] > 0) & (diffusion.schedule(10)[0] <= 0.5))
    x0 = np.zeros((4, 16, 16, 1), "float32") + 0.5
    split = diffusion.noised(x0, 2, 100, np.random.default_rng(0))
    t = split.x["timestep"][:, 0]
    a = abar[t].reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(split.x["noisy_image"], np.sqrt(a) * 0.5 + np.sqrt(1 - a) * split.y, atol=1e-5)


def test_diffusion_trivial_predictor_and_sampler():
    trained = tiny_trained("diffusion")
    spec, cfg = trained.spec, trained.config
    test = trained.splits().test
    zeros = spec.score(lambda x: np.zeros_like(x["noisy_image"]), test, cfg)
    assert 0.8 < zeros < 1.2  # predicting no noise scores the noise variance
    samples = diffusion.sample(keras_predict(trained.load()), 3, cfg, seed=0)
    assert samples.shape == (3, cfg["image_size"], cfg["image_size"], 1)
    assert np.isfinite(samples).all() and samples.min() >= -1 and samples.max() <= 1


# ----------------------------------------------------------------------------------------------- yolo


def test_yolo_encode_decode_roundtrip():
    boxes = np.array([[0.1, 0.1, 0.3, 0.4], [0.5, 0.55, 0.9, 0.8]], "float32")
    target = yolo.encode(boxes, np.array([2, 0]), 8)
    gt_boxes, gt_classes = yolo.ground_truth(target)
    order = np.argsort(gt_boxes[:, 0])
    np.testing.assert_allclose(gt_boxes[order], boxes, atol=1e-6)
    np.testing.assert_array_equal(gt_classes[order], [2, 0])
    det_boxes, scores, classes = yolo.decode(target)  # a perfect grid decodes to the same boxes
    assert len(det_boxes) == 2 and np.all(scores == 1)
    assert yolo.mean_average_precision([yolo.decode(target)], [(gt_boxes, gt_classes)]) == 1.0


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 9, 11]], float)
    keep = yolo.nms(boxes, np.array([0.6, 0.9, 0.5, 0.3]), iou_threshold=0.5)
    assert list(keep) == [1, 2]
    assert yolo.iou(boxes[0], boxes[2:3])[0] == 0
    assert yolo.iou(boxes[0], boxes[0:1])[0] == pytest.approx(1.0)


def test_average_precision_by_hand():
    truth = [(np.array([[0, 0, .2, .2], [.5, .5, .7, .7]]), np.array([0, 0]))]
    dets = [(np.array([[0, 0, .2, .2], [.3, .3, .4, .4], [.5, .5, .7, .69]]), np.array([.9, .8, .7]),
             np.array([0, 0, 0]))]
    # TP (P=1, R=.5), FP (P=.5), TP (P=2/3, R=1): AP = .5 * 1 + .5 * 2/3
    assert yolo.average_precision(dets, truth, 0) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert yolo.average_precision(dets, truth, 1) is None
    assert yolo.mean_average_precision(dets, truth) == pytest.approx(0.5 + 0.5 * 2 / 3)
    none = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))]
    assert yolo.mean_average_precision(none, truth) == 0.0


def test_yolo_loss_prefers_the_truth():
    _, objects = scenes.detection_scenes(4, 64, seed=0, grid=8)
    y = np.stack([yolo.encode(b, c, 8) for b, c in objects])
    perfect = y.copy()
    perfect[..., 5:10] = 0.0  # second box slot: not responsible, confidence 0
    rng = np.random.default_rng(0)
    noisy = rng.uniform(0.01, 0.99, y.shape).astype("float32")
    good = keras.backend.get_value(yolo.yolo_loss(y, perfect.clip(1e-4, 1 - 1e-4)))
    bad = keras.backend.get_value(yolo.yolo_loss(y, noisy))
    assert good.shape == (4,) and np.all(good < 0.1) and np.all(bad > 10 * good)


def test_yolo_metric_is_computed_from_predictions():
    trained = tiny_trained("yolo")
    test = trained.splits().test
    spec = trained.spec
    assert spec.score(lambda x: test.y, test, trained.config) == 1.0
    assert 0.0 <= trained.metric <= 1.0


# ------------------------------------------------------------------------------------------ fusion


@pytest.mark.parametrize("name,second", [("vqa_fusion", "question_tokens"), ("av_fusion", "audio")])
def test_fusion_models_keep_the_seed_image_size_selectable(name, second):
    spec = models.get(name)
    sig = spec.input_signature(spec.resolve_config(tiny=True, image_size=224))
    assert [s.name for s in sig] == ["image", second]
    assert sig[0].shape == (224, 224, 3)
    layer_types = {type(layer).__name__ for layer in spec.build(spec.resolve_config(tiny=True)).layers}
    assert "Concatenate" in layer_types and ("LSTM" in layer_types or "Embedding" in layer_types)
