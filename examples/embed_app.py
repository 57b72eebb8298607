"""A minimal app that embeds an exported model: no TensorFlow, only numpy + the runtime.

    python -m export tflite cnn --quantize int8 -o digits.tflite
    python examples/embed_app.py digits.tflite

It reads the labels and preprocessing from the file's metadata and classifies a few of
scikit-learn's bundled digit images (scaled the way the metadata says).
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from export import runtime  # noqa: E402  (imports onnxruntime / ai-edge-litert, never TensorFlow)


def digit_images(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A few 8x8 digits from scikit-learn, upscaled to 28x28x1 in [0, 1]."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.stack([zoom(img / 16.0, 3.5, order=1) for img in data.images[-n:]]).clip(0, 1)
    return images[..., None].astype(np.float32), data.target[-n:]


def main(path: str) -> int:
    model = runtime.load(path)
    labels = model.metadata.get("labels") or [str(i) for i in range(10)]
    print(f"model: {model.metadata.get('model', path)}; inputs {model.input_names}; "
          f"preprocessing: {model.metadata.get('preprocessing')}")
    images, truth = digit_images()
    probabilities = model.predict(images)
    for p, t in zip(probabilities, truth):
        print(f"predicted {labels[int(p.argmax())]} ({p.max():.2f}), true {t}")
    accuracy = float(np.mean(probabilities.argmax(-1) == truth))
    print(f"accuracy on {len(truth)} images: {accuracy:.2f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python examples/embed_app.py MODEL.tflite|MODEL.onnx", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1]))
