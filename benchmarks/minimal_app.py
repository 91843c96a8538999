"""The bare endpoint of the service benchmark: the least a FastAPI endpoint can do with the same ONNX session.

POST /score {"image": 28x28 ints in 0..255} -> {"label": int, "score": float}: the body of openset's
/v1/predict, and one ONNX thread. No validation, preprocessing, metrics or logs.
"""

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request

MODEL = Path(os.environ["OPENSET_MODEL_DIR"]) / "model.onnx"
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
app = FastAPI()


@app.post("/score")
async def score(request: Request) -> dict:
    image = (np.asarray((await request.json())["image"], np.float32) / 255.0).reshape(1, 1, 28, 28)
    probs, score = session.run(["probs", "score"], {"image": image})
    return {"label": int(probs[0].argmax()), "score": float(score[0])}
