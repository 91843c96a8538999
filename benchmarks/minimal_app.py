"""The baseline for the service benchmark: the least a FastAPI endpoint can do with the same ONNX session.

POST /score with 784 float32 bytes -> {"score": ...}. No preprocessing, validation, metrics or logs.
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
    image = np.frombuffer(await request.body(), np.float32).reshape(1, 1, 28, 28)
    probs, score = session.run(["probs", "score"], {"image": image})
    return {"label": int(probs[0].argmax()), "score": float(score[0])}
