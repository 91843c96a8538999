"""LitServe on the benchmark's ONNX model: a LitAPI with JSON in and out.

    .peers/litserve/bin/python benchmarks/peers/litserve_server.py MODEL_DIR PORT

POST /predict {"image": 28x28 ints in 0..255} -> {"label": int, "score": float}. One API server, one
inference worker (LitServe runs them as two processes), one ONNX thread, logs at warning, on 127.0.0.1.
"""

import sys
from pathlib import Path

import litserve as ls
import numpy as np
import onnxruntime as ort


class Digits(ls.LitAPI):
    def __init__(self, model_dir: Path):
        super().__init__()
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.model_dir / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])

    def decode_request(self, request: dict) -> np.ndarray:
        return (np.asarray(request["image"], np.float32) / 255.0).reshape(1, 1, 28, 28)

    def predict(self, image: np.ndarray) -> dict:
        probs, score = self.session.run(["probs", "score"], {"image": image})
        return {"label": int(probs[0].argmax()), "score": float(score[0])}


if __name__ == "__main__":
    model_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    server = ls.LitServer(Digits(model_dir), accelerator="cpu", devices=1, workers_per_device=1)
    server.run(host="127.0.0.1", port=port, num_api_servers=1, log_level="warning", generate_client_file=False)
