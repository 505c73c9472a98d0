"""Losses: BCE, Dice and focal (MONAI), focal-Tversky, IoU-prediction MSE, and their weighted composite."""

from medseg.losses.composite import LOSS_NAMES, CompositeLoss, make_loss
from medseg.losses.focal_tversky import FocalTverskyLoss
from medseg.losses.iou_mse import IoUPredictionMSE, mask_iou

__all__ = ["LOSS_NAMES", "CompositeLoss", "FocalTverskyLoss", "IoUPredictionMSE", "make_loss", "mask_iou"]
