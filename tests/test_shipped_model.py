"""The ``universal`` model that ships inside the package: registered by the sha256 of its ``model.json`` (which pins
every part), loads with ``load_model("universal")`` and segments the README's example images without a prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.errors import InvalidInputError
from medseg.weights import SHIPPED_MODELS, sha256_file, shipped_model_folder
from tests.conftest import SHARED_WEIGHTS, requires_shared_weights

EXAMPLES = Path(__file__).parents[1] / "examples" / "images"


def test_the_shipped_folder_is_registered_and_small() -> None:
    folder = shipped_model_folder("universal")
    assert sha256_file(folder / "model.json") == SHIPPED_MODELS["universal"]
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 60e6


def test_the_shipped_vessel_specialist_is_two_unets_fed_with_flips() -> None:
    """The recipe's retinal-vessel specialist (``configs/universal-cpu.yaml``): the reference and the strongly
    augmented U-Net, logits averaged over both and over the four flips of each image."""
    from medseg.models.io import load_model

    loaded = load_model(shipped_model_folder("universal") / "specialists" / "retinal-vessel")
    assert loaded.name == "ensemble" and loaded.scales == (1.0,) and loaded.tta and loaded.tile == 256
    assert len(loaded.model.members) == 2


@requires_shared_weights
def test_the_universal_predictor_feeds_the_vessel_specialist_as_it_ships() -> None:
    from medseg.inference.universal import UniversalPredictor
    from medseg.models.io import load_model

    model = load_model(shipped_model_folder("universal")).model
    assert model.specialist_options["retinal-vessel"]["tta"]
    predictor = UniversalPredictor(model)
    vessels = predictor._specialists["retinal-vessel"]
    assert vessels.tta and vessels.scales == (1.0,) and vessels.tile == 256


def test_a_changed_model_json_is_refused(monkeypatch) -> None:
    monkeypatch.setitem(SHIPPED_MODELS, "universal", "0" * 64)
    with pytest.raises(InvalidInputError, match="reinstall medseg"):
        shipped_model_folder("universal")


@requires_shared_weights
def test_universal_segments_the_examples_without_a_prompt(monkeypatch) -> None:
    import numpy as np

    from medseg.data import load_samples
    from medseg.inference.universal import UniversalPredictor

    monkeypatch.setenv("MEDSEG_WEIGHTS", str(SHARED_WEIGHTS.parent))
    pred = UniversalPredictor.from_folder()
    expected = {"busi_benign_019.png": "busi", "chase_04L.jpg": "retinal-vessel", "dsb_003cee89357d.png": "dsb2018"}
    for name, task in expected.items():
        (s,) = load_samples(EXAMPLES / name)
        p = pred.predict([s.image])[0]
        assert p.task == task and p.confident and p.mask.shape == s.image.shape[:2] and 0 < np.mean(p.mask) < 0.6
    fast = UniversalPredictor.from_folder(fast=True)  # LiteMedSAM's encoder at 128², the fine-tuned head
    for name, task in expected.items():
        (s,) = load_samples(EXAMPLES / name)
        p = fast.predict([s.image])[0]
        assert p.task == task and p.engine == "head" and p.mask.shape == s.image.shape[:2]
    keep = UniversalPredictor.from_folder(fast=True, keep_specialists=True)
    (s,) = load_samples(EXAMPLES / "chase_04L.jpg")
    assert keep.predict([s.image])[0].engine == "specialist"
