"""Pure image operators: edge filters (Kirsch, Sobel, Prewitt, Scharr, Laplacian), grey conversion,
Otsu pseudo-masks, meta-features, mask boundaries and contour overlays. Edges, grey conversion, Otsu and
meta-features have a NumPy and a batched torch path with the same results."""

from medseg.ops.boundary import mask_boundary, overlay_contours
from medseg.ops.color import GRAY_WEIGHTS, to_gray, to_gray_torch
from medseg.ops.edges import (
    EDGE_OPERATORS,
    EdgeFilter,
    edge_filter,
    edge_filter_numpy,
    edge_filter_torch,
    kirsch,
    kirsch_kernels,
)
from medseg.ops.metafeatures import FEATURE_NAMES, image_entropy, meta_features, meta_features_torch
from medseg.ops.model_input import ModelInput, grey_rgb, prepare_input
from medseg.ops.otsu import (
    Cleanup,
    OtsuPseudoMask,
    otsu_pseudo_mask,
    otsu_pseudo_mask_torch,
    otsu_threshold,
    otsu_threshold_torch,
)

__all__ = [
    "EDGE_OPERATORS",
    "FEATURE_NAMES",
    "GRAY_WEIGHTS",
    "Cleanup",
    "EdgeFilter",
    "ModelInput",
    "OtsuPseudoMask",
    "edge_filter",
    "edge_filter_numpy",
    "edge_filter_torch",
    "grey_rgb",
    "image_entropy",
    "kirsch",
    "kirsch_kernels",
    "mask_boundary",
    "meta_features",
    "meta_features_torch",
    "otsu_pseudo_mask",
    "otsu_pseudo_mask_torch",
    "otsu_threshold",
    "otsu_threshold_torch",
    "overlay_contours",
    "prepare_input",
    "to_gray",
    "to_gray_torch",
]
