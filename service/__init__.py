"""The openset inference service: FastAPI + ONNX Runtime, no torch."""
