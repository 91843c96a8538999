"""BentoML (1.4) on the benchmark's ONNX model: one service, one JSON API.

    OPENSET_MODEL_DIR=MODEL_DIR .peers/bentoml/bin/bentoml serve bentoml_service:Digits \\
        --working-dir benchmarks/peers --host 127.0.0.1 --port PORT

POST /predict {"image": 28x28 ints in 0..255} -> {"label": int, "score": float}. One worker, one ONNX
thread, no access log.
"""

import os
from pathlib import Path

import bentoml
import numpy as np
import onnxruntime as ort


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Digits:
    def __init__(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(Path(os.environ["OPENSET_MODEL_DIR"]) / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])

    @bentoml.api
    def predict(self, image: list[list[int]]) -> dict:
        array = (np.asarray(image, np.float32) / 255.0).reshape(1, 1, 28, 28)
        probs, score = self.session.run(["probs", "score"], {"image": array})
        return {"label": int(probs[0].argmax()), "score": float(score[0])}
