"""Numbers in requests to numpy, and the one check that makes them pixels (v1 and v2 alike).

Split as KServe's and MLServer's codecs are: the routes parse a request's structure, this module turns its
values into an array, and :func:`pixels` decides whether that array is a picture the model can take.
"""

from __future__ import annotations

import numpy as np

from service.errors import ServiceError

# The Open Inference Protocol's numeric datatypes, as little-endian numpy types: any of them is cast.
DATATYPES: dict[str, np.dtype] = {name: np.dtype(code) for name, code in {
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
    "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
}.items()}
NOT_PIXELS = ("BOOL", "BYTES")  # datatypes of the protocol that are never grey levels
SCALES = {
    "unit": "in [0, 1]",  # floating-point tensors
    "byte": "integers in 0..255",  # integer tensors
    "either": "in [0, 1] or [0, 255]",  # v1 arrays: read as 0..255 once any value is above 1
}


def numbers(values) -> np.ndarray | None:
    """A (nested) list of JSON numbers as a float64 array, or None: booleans, strings, null, objects and
    ragged nesting are not numbers, even one among many (numpy alone would read ``[0.5, true]`` as 1.0)."""
    if not isinstance(values, list):
        return None
    try:
        objects = np.asarray(values, dtype=object)
    except ValueError:  # ragged in a way numpy refuses even as objects
        return None
    if not set(map(type, objects.ravel().tolist())) <= {int, float}:
        return None
    return objects.astype(np.float64)


def from_binary(data: bytes, datatype: str) -> np.ndarray:
    """A binary tensor (little-endian, the protocol's layout) as float64."""
    return np.frombuffer(data, dtype=DATATYPES[datatype]).astype(np.float64)


def pixels(array: np.ndarray, scale: str) -> np.ndarray:
    """Grey levels as float32 in [0, 1], or a 422 naming what was wrong; ``scale`` is a key of :data:`SCALES`."""
    if not np.all(np.isfinite(array)):
        raise ServiceError("pixel values contain NaN or infinity", 422)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    top = 1.0 if scale == "unit" else 255.0
    if low < 0 or high > top or (scale == "byte" and np.any(array % 1)):
        raise ServiceError(f"pixel values must be {SCALES[scale]}", 422)
    divide = scale == "byte" or (scale == "either" and high > 1.0)
    return (array / 255.0 if divide else array).astype(np.float32)
