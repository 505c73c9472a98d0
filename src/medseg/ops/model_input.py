"""What a model sees of an image: the input transforms a model is trained with, recorded in its ``model.json``
and applied again at prediction (one implementation for the training cache and :class:`medseg.inference.Predictor`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from medseg.ops.color import to_gray
from medseg.ops.edges import edge_filter_numpy

InputColor = Literal["rgb", "grey"]


def grey_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 → (H, W, 3) uint8 with the BT.601 grey value in every channel (the model keeps its
    three-channel input layer, so RGB-pretrained weights still load)."""
    grey = to_gray(image)
    return np.repeat(grey[..., None], 3, axis=-1)


def prepare_input(image: np.ndarray, *, color: InputColor = "rgb", edge: str | None = "none") -> np.ndarray:
    """The model input of an (H, W, 3) uint8 image: grey first (``color="grey"``), then the edge magnitude
    (``edge``, an operator of :data:`medseg.ops.EDGE_OPERATORS`; ``none``/``None``: the image itself)."""
    if color not in ("rgb", "grey"):
        raise ValueError(f"unknown input colour {color!r}; choose rgb or grey")
    if color == "grey":
        image = grey_rgb(image)
    if edge not in (None, "none"):
        image = edge_filter_numpy(image, edge)  # type: ignore[arg-type]
    return image
