"""The ONNX contract that the service and outside clients rely on (torch-free, numpy-free).

Input ``image``: float32 ``[N, 1, 28, 28]``, intensities in [0, 1], white digit on black,
MNIST-centred (normalisation happens inside the graph). Outputs:

=====================  ========  ==============================================
``logits``             [N, K]    class logits over the known classes
``probs``              [N, K]    softmax of ``logits``
``known_prob``         [N]       the sigmoid known-class head
``centroid_distance``  [N]       distance to the nearest class centroid (lower = more known)
``score``              [N]       the combined score; higher = more known
=====================  ========  ==============================================

Decision: known iff ``score >= threshold`` (``model.json``), then the argmax of ``probs``;
else the unknown label (``"other"``). ``model.json`` records the ONNX file's SHA-256.
"""

from __future__ import annotations

from typing import Any

INPUT = "image"
OUTPUTS = ("logits", "probs", "known_prob", "centroid_distance", "score")
# MNIST's layout of a digit in the input: its ink box scaled to fit ``box`` x ``box`` pixels, aspect kept, and its
# centre of mass at the centre of the ``side`` x ``side`` field. Recorded in model.json; the service lays out
# people's pictures by it.
LAYOUT = {"side": 28, "box": 20, "centre": "centre of mass"}
UNKNOWN_LABEL = "other"
FORMAT_VERSION = 1


def check_format(meta: dict) -> None:
    """Raise ``ValueError`` unless a ``model.json`` is of the format this code reads."""
    found = meta.get("format_version")
    if found != FORMAT_VERSION:
        raise ValueError(f"format_version {found!r}; this version of openset reads format {FORMAT_VERSION}")


def check_contract(session: Any, num_classes: int) -> None:
    """Raise ``ValueError`` unless an onnxruntime session has the contract's input and outputs."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT or list(inputs[0].shape[1:]) != [1, 28, 28]:
        raise ValueError(f"model input must be {INPUT!r} [N, 1, 28, 28]")
    outputs = {o.name: o.shape for o in session.get_outputs()}
    missing = [name for name in OUTPUTS if name not in outputs]
    if missing:
        raise ValueError(f"model lacks outputs {missing}")
    if len(outputs["probs"]) != 2 or outputs["probs"][1] != num_classes:
        raise ValueError(f"model output probs has shape {outputs['probs']}; "
                         f"the metadata's {num_classes} classes need [N, {num_classes}]")
