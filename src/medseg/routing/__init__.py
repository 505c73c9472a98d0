"""Per-image routing between models from image meta-features (the CMMC meta-router)."""

from medseg.routing.threshold import ThresholdRule, fit_threshold_rule, routed_score

__all__ = ["ThresholdRule", "fit_threshold_rule", "routed_score"]
