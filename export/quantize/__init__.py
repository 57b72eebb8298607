"""Post-training quantization of a converted file: recipes, the ONNX int8 flavour per host, mixed precision, sensitivity."""
