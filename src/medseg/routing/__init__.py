"""Per-image routing between models from image meta-features (the CMMC meta-router): the paper's threshold search,
learned routers (logistic regression, shallow tree), and hold-out / cross-validated evaluation."""

from medseg.routing.learned import (
                                    FITTERS,
                                    LogisticRule,
                                    RouterEvaluation,
                                    TreeRule,
                                    cross_validate,
                                    fit_logistic_rule,
                                    fit_tree_rule,
                                    holdout,
                                    rule_from_dict,
)
from medseg.routing.predictor import RoutedPredictor, load_router
from medseg.routing.threshold import ThresholdRule, fit_threshold_rule, routed_score

__all__ = ["FITTERS", "LogisticRule", "RoutedPredictor", "RouterEvaluation", "ThresholdRule", "TreeRule",
           "cross_validate", "fit_logistic_rule", "fit_threshold_rule", "fit_tree_rule", "holdout", "load_router",
           "routed_score", "rule_from_dict"]
