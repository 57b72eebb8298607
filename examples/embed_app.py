"""A minimal app that embeds an exported model: only the runtime distribution, no TensorFlow, no toolkit.

    pip install './runtime[litert]'        # the app's environment: numpy + onnxruntime + ai-edge-litert
    python -m export tflite cnn --quantize int8 -o digits.tflite    # with the toolkit, anywhere
    python examples/embed_app.py digits.tflite [DIGITS.npz]

It reads the labels and preprocessing from the file's metadata and classifies the 8 handwritten digits in
``digits.npz`` next to this file (scikit-learn's last 8 digit images, upscaled to 28x28, stored as uint8 so the app
needs nothing but numpy), scaled the way the metadata says.
"""
import sys
from pathlib import Path

import numpy as np

import ct_runtime  # imports onnxruntime / ai-edge-litert, never TensorFlow

SAMPLES = Path(__file__).with_name("digits.npz")


def digit_images(samples: Path = SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """28x28x1 images in [0, 1] and their true digits."""
    with np.load(samples) as data:
        return (data["images"][..., None] / 255.0).astype(np.float32), data["labels"]


def main(path: str, samples: Path = SAMPLES) -> int:
    try:
        model = ct_runtime.load(path)
        images, truth = digit_images(samples)
        probabilities = model.predict(images)
    except (ct_runtime.RuntimeModelError, OSError, KeyError, ValueError) as e:
        print(f"embed_app: {e}", file=sys.stderr)
        return 2
    labels = model.metadata.get("labels") or [str(i) for i in range(probabilities.shape[-1])]
    print(f"model: {model.metadata.get('model', path)}; inputs {model.input_names}; "
          f"preprocessing: {model.metadata.get('preprocessing')}")
    for p, t in zip(probabilities, truth):
        print(f"predicted {labels[int(p.argmax())]} ({p.max():.2f}), true {t}")
    accuracy = float(np.mean(probabilities.argmax(-1) == truth))
    print(f"accuracy on {len(truth)} images: {accuracy:.2f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print("usage: python examples/embed_app.py MODEL.tflite|MODEL.onnx [DIGITS.npz]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(*sys.argv[1:]))
