"""What a model sees of an image: the input transforms a model is trained with, recorded in its ``model.json``
and applied again at prediction (one implementation for the training cache and :class:`medseg.inference.Predictor`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medseg.ops.color import to_gray
from medseg.ops.edges import edge_filter_numpy

InputColor = Literal["rgb", "grey"]


def grey_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 → (H, W, 3) uint8 with the BT.601 grey value in every channel (the model keeps its
    three-channel input layer, so RGB-pretrained weights still load)."""
    grey = to_gray(image)
    return np.repeat(grey[..., None], 3, axis=-1)


@dataclass(frozen=True)
class ModelInput:
    """The input transform of one model — the one object the training cache, the predictor, the task classifier's
    refit and every experiment apply (built from a run's ``data`` section or a folder's ``model.json``).

    ``ModelInput(color, edge)(image)``: (H, W, 3) uint8 → (H, W, 3) uint8 (:func:`prepare_input`).
    """

    color: InputColor = "rgb"
    edge: str = "none"

    def __post_init__(self) -> None:
        if self.color not in ("rgb", "grey"):
            raise ValueError(f"unknown input colour {self.color!r}; choose rgb or grey")
        object.__setattr__(self, "edge", self.edge or "none")

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ModelInput:
        """From a ``model.json`` (``color``, ``edge``; absent: RGB, no edge)."""
        return cls(meta.get("color") or "rgb", meta.get("edge") or "none")

    @property
    def identity(self) -> bool:
        """Whether the transform leaves images as they are (RGB, no edge)."""
        return self.color == "rgb" and self.edge == "none"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image if self.identity else prepare_input(image, color=self.color, edge=self.edge)


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
