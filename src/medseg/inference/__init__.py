"""Inference: the batched :class:`Predictor` and box prompts derived from masks."""

from medseg.inference.boxes import boxes_from_mask
from medseg.inference.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor", "boxes_from_mask"]
