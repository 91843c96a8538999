"""The graph openset's exporter writes (torch-free, numpy-free); consumers read it from the manifest.

Input ``image``: float32 ``[N, 1, side, side]``, intensities in [0, 1], white digit on black, laid out as MNIST's
digits are (normalisation happens inside the graph). Outputs:

=============  ========  ==============================================
``logits``     [N, K]    class logits over the known classes
``probs``      [N, K]    softmax of ``logits``
``known_prob`` [N]       the sigmoid known-class head
``distance``   [N]       the combined score's distance term (lower = more known); what it measures is recipe's,
                         and the manifest describes it
``score``      [N]       the combined score; higher = more known
=============  ========  ==============================================

Decision: known iff ``score >= threshold``, then the argmax of ``probs``; else the unknown label (``"other"``).
This module only names what :mod:`openset.export` builds and :mod:`training.pipeline` records in the manifest
(:mod:`openset.manifest`); the service, ``openset evaluate`` and the tests read the manifest instead.
"""

from __future__ import annotations

INPUT = "image"
OUTPUTS = ("logits", "probs", "known_prob", "distance", "score")
SCORE = "score"
UNKNOWN_LABEL = "other"
# MNIST's layout: the ink box scaled to fit 20 x 20 pixels of the 28 x 28 field; other sides keep the proportion.
MNIST_SIDE, MNIST_BOX = 28, 20


def layout(side: int) -> dict:
    """MNIST's layout of a digit, for a ``side`` x ``side`` input."""
    return {"side": side, "box": max(1, round(side * MNIST_BOX / MNIST_SIDE)), "centre": "centre of mass"}


def tensor_specs(num_classes: int, side: int, distance: str) -> tuple[dict, list[dict]]:
    """The manifest's ``input`` and ``outputs``; ``distance`` says what the distance output measures."""
    image = {"name": INPUT, "datatype": "FP32", "shape": [-1, 1, side, side],
             "description": "grey levels in [0, 1], white digit on black, laid out as MNIST's digits",
             "range": [0.0, 1.0], "polarity": "white digit on black", "layout": layout(side)}
    described = {
        "logits": ([-1, num_classes], "class logits over the known classes"),
        "probs": ([-1, num_classes], "softmax over the known classes"),
        "known_prob": ([-1], "the sigmoid known-class head"),
        "distance": ([-1], f"{distance} (lower = more known)"),
        "score": ([-1], "the combined open-set score (higher = more known)"),
    }
    outputs = [{"name": name, "datatype": "FP32", "shape": described[name][0], "description": described[name][1]}
               for name in OUTPUTS]
    return image, outputs
