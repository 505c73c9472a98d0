"""Logit ensembles: the mean of the members' logits, as a model folder that loads hash-checked like any other,
whose members can be taken out again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medseg.errors import InvalidInputError
from medseg.models.ensemble import LogitEnsemble, ensemble_member_folder, ensemble_model_folders
from medseg.models.io import copy_model_folder, load_model, save_model_folder
from medseg.models.registry import build_model
from tests.conftest import tiny_model_config

UNET = tiny_model_config("resnet_unet")


def _unet_folder(path: Path, seed: int, **extra: object) -> Path:
    torch.manual_seed(seed)
    model = build_model("resnet_unet", **UNET)
    return save_model_folder(model, path, name="resnet_unet", options=UNET, img_size=32,
                             extra={"tile": 32, "overlap": 0.25, **extra})


def test_the_ensemble_is_the_mean_of_its_members_logits() -> None:
    members = [torch.nn.Conv2d(3, 2, 1) for _ in range(3)]
    x = torch.randn(2, 3, 8, 8)
    ens = LogitEnsemble(members).eval()
    with torch.no_grad():
        assert torch.allclose(ens(x), sum(m(x) for m in members) / 3, atol=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        LogitEnsemble(members[:1])


def test_an_ensemble_folder_round_trips_and_keeps_how_its_members_are_fed(tmp_path: Path) -> None:
    a, b = _unet_folder(tmp_path / "a", 0), _unet_folder(tmp_path / "b", 1)
    folder = ensemble_model_folders([a, b], tmp_path / "ens", extra={"scales": [1.0, 0.8]})
    loaded = load_model(folder)
    assert loaded.name == "ensemble" and loaded.tile == 32 and loaded.scales == (1.0, 0.8)
    assert [m["sha256"] for m in loaded.meta["ensembled_from"]] == [load_model(f).meta["sha256"] for f in (a, b)]
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        want = (load_model(a).model(x) + load_model(b).model(x)) / 2
        assert torch.allclose(loaded.model(x), want, atol=1e-5)
        # a member taken out is the member that went in
        out = ensemble_member_folder(folder, 1, tmp_path / "m1")
        assert torch.allclose(load_model(out).model(x), load_model(b).model(x), atol=1e-6)
    assert load_model(out).tile == 32 and load_model(out).name == "resnet_unet"
    assert load_model(ensemble_member_folder(a, 0, tmp_path / "a0")).meta["sha256"] == load_model(a).meta["sha256"]
    with pytest.raises(InvalidInputError, match="no member 2"):
        ensemble_member_folder(folder, 2, tmp_path / "m2")
    with pytest.raises(InvalidInputError, match="no member 1"):
        ensemble_member_folder(a, 1, tmp_path / "a1")


def test_members_fed_otherwise_are_refused_naming_the_folder(tmp_path: Path) -> None:
    a, b = _unet_folder(tmp_path / "a", 0), _unet_folder(tmp_path / "b", 1, color="grey")
    with pytest.raises(InvalidInputError, match=r"b.*color 'grey'"):
        ensemble_model_folders([a, b], tmp_path / "ens")
    with pytest.raises(InvalidInputError, match="at least two"):
        ensemble_model_folders([a], tmp_path / "ens")


def test_a_copied_model_folder_takes_new_feeding_settings_but_not_new_weights(tmp_path: Path) -> None:
    a = _unet_folder(tmp_path / "a", 0)
    out = copy_model_folder(a, tmp_path / "copy", {"scales": [1.0, 0.5]})
    assert load_model(out).scales == (1.0, 0.5) and load_model(a).scales == (1.0,)
    assert (out / "model.safetensors").read_bytes() == (a / "model.safetensors").read_bytes()
    with pytest.raises(InvalidInputError, match="sha256"):
        copy_model_folder(a, tmp_path / "bad", {"sha256": "0" * 64})
    meta = json.loads((out / "model.json").read_text())
    assert meta["tile"] == 32
