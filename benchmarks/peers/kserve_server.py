"""KServe's Python model server on the benchmark's ONNX model: Open Inference Protocol v2 over REST.

    .peers/kserve/bin/python benchmarks/peers/kserve_server.py MODEL_DIR PORT

POST /v2/models/<name>/infer with the image as UINT8 (0..255) or FP32 ([0, 1]) in JSON `data`, shape
[1, 1, 28, 28]: the same body as openset's. Answers every ONNX output and the decided label, as openset does.
One worker, one ONNX thread, no gRPC, no latency log, the logs at warning; on 127.0.0.1 only.
"""

import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("KSERVE_LOGLEVEL", "WARNING")

import kserve  # noqa: E402  (reads KSERVE_LOGLEVEL on import)
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.utils.utils import generate_uuid  # noqa: E402


class OnnxModel(kserve.Model):
    def __init__(self, model_dir: Path):
        manifest = json.loads((model_dir / "model.json").read_text())
        super().__init__(manifest["name"])
        self.model_dir, self.manifest = model_dir, manifest
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.model_dir / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.names = [output.name for output in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        tensor = payload.inputs[0]
        image = tensor.as_numpy().astype(np.float32)
        if tensor.datatype == "UINT8":
            image /= 255.0
        values = dict(zip(self.names, self.session.run(None, {"image": image}), strict=True))
        known = values["score"] >= self.manifest["decision"]["threshold"]
        classes = np.array(self.manifest["classes"], dtype=object)[values["probs"].argmax(axis=1)]
        values["label"] = np.where(known, classes, self.manifest["unknown_label"]).astype(object)
        outputs = []
        for name, value in values.items():
            output = InferOutput(name, list(value.shape), "BYTES" if value.dtype == object else "FP32")
            output.set_data_from_numpy(value, binary_data=False)
            outputs.append(output)
        return InferResponse(payload.id or generate_uuid(), self.name, outputs)


class LoopbackServer(kserve.ModelServer):
    def setup_event_loop(self) -> None:
        # Called once the REST server is configured and before it binds: KServe has no option for the host.
        self._rest_server.config.host = "127.0.0.1"
        super().setup_event_loop()


if __name__ == "__main__":
    model_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    server = LoopbackServer(http_port=port, workers=1, enable_grpc=False, enable_latency_logging=False)
    for name in ("uvicorn.error", "uvicorn.access"):  # KServe sets them to INFO, one line a request
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([OnnxModel(model_dir)])
