"""Request bodies to numpy and back: the one check that makes numbers pixels (v1 and v2 alike), and the Open
Inference Protocol v2's tensors, JSON and Triton's binary extension, in and out.

Split as KServe's and MLServer's codecs are: the endpoints route, this module decodes and encodes, and
:func:`pixels` decides whether an array is a picture the model can take. v2 bodies are parsed by hand:
tritonclient sends JSON without a Content-Type, and binary requests are a JSON header followed by raw tensors
(``Inference-Header-Content-Length``).
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np
import orjson
from fastapi import Response
from fastapi.responses import JSONResponse

from openset.manifest import InputSpec
from service.errors import ServiceError

HEADER_LENGTH = "inference-header-content-length"


class JSON(JSONResponse):
    """A JSON response encoded by orjson (several times faster than the standard library's encoder)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# The Open Inference Protocol's numeric datatypes, as little-endian numpy types: any of them is cast.
DATATYPES: dict[str, np.dtype] = {name: np.dtype(code) for name, code in {
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
    "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
}.items()}
NUMBER_TYPES = {int, float}  # what JSON numbers parse to
NOT_PIXELS = ("BOOL", "BYTES")  # datatypes of the protocol that are never grey levels
SCALES = {
    "unit": "in [0, 1]",  # floating-point tensors
    "byte": "integers in 0..255",  # integer tensors
    "either": "in [0, 1] or [0, 255]",  # v1 arrays: read as 0..255 once any value is above 1
}


def numbers(values, booleans: bool = True) -> np.ndarray | None:
    """A (nested) list of JSON numbers as an array (int64 when they are all integers numpy can hold, else float64),
    or None: booleans, strings, null, objects and ragged nesting are not numbers, even one among many (numpy alone
    would read ``[0.5, true]`` as 1.0).

    ``booleans=False`` says that the body the values came from has no ``true`` or ``false`` in it
    (:func:`has_booleans`): then numpy's own reading of the list is enough when it finds numbers, without a look
    at the type of every value (a third of the cost for one image)."""
    if not isinstance(values, list):
        return None
    if not booleans:
        try:
            array = np.asarray(values)
        except (ValueError, OverflowError):  # ragged, or an integer beyond numpy's: the look below says
            array = None
        if array is not None and array.dtype.kind in "if":
            return array
    flat = values
    if values and isinstance(values[0], list):  # nested: numpy lays it out (ragged is refused)
        try:
            flat = np.asarray(values, dtype=object).ravel().tolist()
        except ValueError:  # ragged in a way numpy refuses even as objects
            return None
    if not set(map(type, flat)) <= NUMBER_TYPES:  # (a ragged list leaves lists here)
        return None
    try:
        array = np.asarray(values)
        return array if array.dtype.kind in "if" else np.array(values, dtype=np.float64)  # (beyond int64)
    except OverflowError:  # an integer beyond float64
        return None


def has_booleans(body: bytes) -> bool:
    """Whether a JSON body may hold a boolean: ``true`` or ``false`` anywhere in it (in a string too: may)."""
    return b"true" in body or b"false" in body


def from_binary(data: bytes, datatype: str) -> np.ndarray:
    """A binary tensor (little-endian, the protocol's layout), in its own numpy type."""
    return np.frombuffer(data, dtype=DATATYPES[datatype])


def pixels(array: np.ndarray, scale: str) -> np.ndarray:
    """Grey levels as float32 in [0, 1], or a 422 naming what was wrong; ``scale`` is a key of :data:`SCALES`.

    One pass for the range: min and max carry a NaN or an infinity, so no separate check is needed."""
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ServiceError("pixel values contain NaN or infinity", 422)
    top = 1.0 if scale == "unit" else 255.0
    fractional = scale == "byte" and array.dtype.kind == "f" and not np.array_equal(array, np.rint(array))
    if low < 0 or high > top or fractional:
        raise ServiceError(f"pixel values must be {SCALES[scale]}", 422)
    divide = scale == "byte" or (scale == "either" and high > 1.0)
    return (array / 255.0 if divide else array).astype(np.float32)


# The Open Inference Protocol v2.

def decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    """The request body after its Content-Encoding (gzip, deflate), within ``limit`` bytes."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ServiceError(f"unsupported Content-Encoding {encoding!r}", 415)
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise ServiceError(f"corrupt {encoding} body: {err}", 400) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ServiceError(f"decompressed body exceeds {limit} bytes", 413)
    return out


def _parameters(obj: dict) -> dict:
    """An object's optional ``parameters``, which must be a JSON object."""
    value = obj.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ServiceError("'parameters' must be an object", 400)
    return value


def _whole(value: Any) -> int | None:
    """A JSON integer as an int (JSON Schema counts ``2.0`` as one too); None for anything else."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _flag(parameters: dict, key: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise ServiceError(f"parameter {key!r} must be true or false", 400)
    return value


def parse_request(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise ServiceError(f"bad {HEADER_LENGTH} header {header_length!r}", 400)
        head, binary = body[: int(header_length)], body[int(header_length) :]
    else:
        head, binary = body, b""
    try:
        payload = orjson.loads(head)
    except orjson.JSONDecodeError:  # also NaN, and nesting over 1024 deep
        raise ServiceError("request body is not valid JSON", 400) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise ServiceError("request must be a JSON object with an 'inputs' list", 400)
    if "id" in payload and not isinstance(payload["id"], str):
        raise ServiceError("'id' must be a string", 400)
    _parameters(payload)
    return payload, binary


def read_input(payload: dict, binary: bytes, max_batch: int, spec: InputSpec, booleans: bool = True) -> np.ndarray:
    """The one input tensor as float32 ``[N, 1, side, side]`` in [0, 1], ``spec`` being the model's input;
    ``booleans`` as for :func:`numbers`.

    A malformed request is a 400; a well-formed tensor of the wrong shape, type or values a 422; a
    batch over the limit a 413, but only once the request is known to be well formed.
    """
    inputs, side = payload["inputs"], spec.side
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or inputs[0].get("name") != spec.name:
        raise ServiceError(f"expected exactly one input named {spec.name!r}", 400)
    tensor = inputs[0]
    datatype, given_shape = tensor.get("datatype"), tensor.get("shape")
    if not isinstance(datatype, str) or datatype not in DATATYPES:  # (a list or an object is not hashable)
        kind = "grey levels are numbers" if datatype in NOT_PIXELS else f"one of {', '.join(DATATYPES)}"
        raise ServiceError(f"input datatype must be {kind}, got {datatype!r}", 422)
    shape = [_whole(d) for d in given_shape] if isinstance(given_shape, list) else None
    if not (shape and None not in shape and len(shape) in (3, 4) and shape[-2:] == [side, side]
            and (len(shape) == 3 or shape[1] == 1) and shape[0] >= 1):
        raise ServiceError(f"input shape must be [N, 1, {side}, {side}] or [N, {side}, {side}], got {given_shape!r}",
                           422)
    # The request's structure first (400), then its size (413), then whether the values fit the shape (422).
    given_size = _parameters(tensor).get("binary_data_size")
    size = _whole(given_size)
    if given_size is not None:
        if size is None or size < 0:
            raise ServiceError(f"binary_data_size must be a byte count, got {given_size!r}", 400)
        if "data" in tensor:
            raise ServiceError("send the input as 'data' or as binary data (binary_data_size), not both", 400)
    else:
        array = numbers(tensor.get("data"), booleans)
        if array is None:
            raise ServiceError("input 'data' must be a (nested) list of numbers", 400)
    if shape[0] > max_batch:
        raise ServiceError(f"batch of {shape[0]} exceeds the limit of {max_batch}", 413)
    count = math.prod(shape)
    if size is not None:
        if size != count * DATATYPES[datatype].itemsize or len(binary) != size:
            raise ServiceError(f"binary_data_size {size!r} does not match shape {shape} and the body", 400)
        array = from_binary(binary, datatype)
    else:
        array = array.reshape(-1)
        if array.size != count:
            raise ServiceError(f"input has {array.size} values, shape {shape} needs {count}", 422)
    scale = "unit" if DATATYPES[datatype].kind == "f" else "byte"
    return pixels(array, scale).reshape(shape[0], 1, side, side)


def requested_outputs(payload: dict, names: list[str]) -> list[tuple[str, bool]]:
    """(name, binary) for each requested output, once each; every output when none are named."""
    default_binary = _flag(_parameters(payload), "binary_data_output", False)
    wanted = payload.get("outputs")
    if wanted is None:
        return [(name, default_binary) for name in names]
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise ServiceError("'outputs' must be a list of objects", 400)
    result: dict[str, bool] = {}
    for item in wanted:
        if item.get("name") not in names:
            raise ServiceError(f"unknown output {item.get('name')!r}; outputs are {names}", 400)
        result[item["name"]] = _flag(_parameters(item), "binary_data", default_binary)
    return list(result.items())


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def encode_response(model: dict[str, str], payload: dict, values: dict[str, Any], wanted) -> Response:
    """The v2 response body for ``values`` (the outputs and the label): JSON, or a JSON header and binary tensors
    (the ``wanted`` list says which); ``model`` is its ``model_name`` and ``model_version``."""
    outputs, blobs = [], []
    for name, binary in wanted:
        value = values[name]
        if isinstance(value, list):  # the label: strings
            entry = {"name": name, "datatype": "BYTES", "shape": [len(value)]}
            raw = _bytes_tensor(value) if binary else None
            data = value
        else:
            entry = {"name": name, "datatype": "FP32", "shape": list(value.shape)}
            raw = np.ascontiguousarray(value, dtype="<f4").tobytes() if binary else None
            data = value.reshape(-1).tolist()
        if binary:
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = data
        outputs.append(entry)
    body = {**model, "outputs": outputs}
    if "id" in payload:
        body["id"] = payload["id"]
    head = orjson.dumps(body)
    if not blobs:
        return Response(head, media_type="application/json")  # (already encoded)
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(head))})
