"""Inference: the batched :class:`Predictor` (box prompts come from :mod:`medseg.data.geometry`)."""

from medseg.data.geometry import boxes_from_mask
from medseg.inference.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor", "boxes_from_mask"]
