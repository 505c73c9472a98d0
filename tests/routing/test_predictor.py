"""RoutedPredictor sends each image to the model its meta-features pick; load_router reads routers.json."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from medseg.errors import InvalidInputError
from medseg.ops.metafeatures import meta_features
from medseg.routing import RoutedPredictor, ThresholdRule, load_router


class _Const:
    """Predicts an all-``value`` mask and remembers what it was asked."""

    def __init__(self, value: bool) -> None:
        self.value, self.seen = value, []

    def predict(self, images, boxes=None, progress=None):
        self.seen.append(len(images))
        return [SimpleNamespace(mask=np.full(im.shape[:2], self.value)) for im in images]


def test_images_go_to_the_side_their_std_picks() -> None:
    rng = np.random.default_rng(0)
    flat = np.full((16, 20, 3), 128, np.uint8)
    noisy = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    threshold = (meta_features(flat)["std"] + meta_features(noisy)["std"]) / 2
    a, b = _Const(False), _Const(True)
    routed = RoutedPredictor(ThresholdRule("std", threshold, b_above=True), a, b, ["std"])
    preds = routed.predict([noisy, flat, noisy])
    assert [bool(p.mask.all()) for p in preds] == [True, False, True]  # input order kept
    assert a.seen == [1] and b.seen == [2] and routed.counts == {"a": 1, "b": 2}
    assert routed.predict([]) == []


def _router_file(tmp_path: Path) -> Path:
    path = tmp_path / "routers.json"
    path.write_text(json.dumps({"kind": "cmmc-router", "a": "raw", "b": "edge", "features": ["std", "entropy"],
                                "routers": {"threshold": {"fundus": {"feature": "std", "threshold": 0.2,
                                                                     "b_above": False}}},
                                "models": {"raw": {"fundus": "R"}, "edge": {"fundus": "E"}}}))
    return path


def test_load_router_and_its_errors(tmp_path: Path) -> None:
    path = _router_file(tmp_path)
    with pytest.raises(InvalidInputError, match=r"its raw model for 'fundus', R, is not here.*medseg experiment cmmc"):
        load_router(path, modality="fundus")  # a router file whose experiment folder is elsewhere
    for name in ("R", "E"):  # model folders beside the file (relative paths resolve against it too)
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.json").write_text("{}")
    rule, models, features = load_router(path, modality="fundus")
    assert rule == ThresholdRule("std", 0.2, False) and models == {"a": str(tmp_path / "R"), "b": str(tmp_path / "E")}
    assert features == ["std", "entropy"]
    with pytest.raises(InvalidInputError, match="no rule for modality 'oct'; it has fundus"):
        load_router(tmp_path / "routers.json", modality="oct")
    with pytest.raises(InvalidInputError, match="no 'tree' router"):
        load_router(tmp_path / "routers.json", modality="fundus", router="tree")
    with pytest.raises(InvalidInputError, match="no raw model for subset 'cup'"):
        load_router(tmp_path / "routers.json", modality="fundus", subset="cup")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(InvalidInputError, match="not a router file"):
        load_router(tmp_path / "other.json", modality="fundus")
