"""Weight averaging (uniform model soup): the mean of the ingredients' tensors, checked element by element against
torch; equal models average to themselves; mismatched models are refused with the file named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.errors import InvalidInputError
from medseg.models import build_model
from medseg.models.averaging import average_model_folders, average_state_dicts
from medseg.models.io import load_model, save_model_folder
from tests.conftest import tiny_model_config


def _head(seed: int, **over: object) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    opts = {**tiny_model_config("prompt_free_head"), **over}
    return build_model("prompt_free_head", **opts), opts


def test_the_mean_of_the_tensors_with_and_without_weights() -> None:
    states = [{"w": torch.randn(3, 4, generator=torch.Generator().manual_seed(i)), "n": torch.tensor(7)}
              for i in range(3)]
    even = average_state_dicts(states)
    torch.testing.assert_close(even["w"], torch.stack([s["w"] for s in states]).mean(0))
    assert torch.equal(even["n"], torch.tensor(7))
    weighted = average_state_dicts(states, [2, 1, 1])
    torch.testing.assert_close(weighted["w"], 0.5 * states[0]["w"] + 0.25 * states[1]["w"] + 0.25 * states[2]["w"])
    torch.testing.assert_close(average_state_dicts([states[0], states[0]])["w"], states[0]["w"])
    half = {"w": states[0]["w"].half(), "n": torch.tensor(7)}
    assert average_state_dicts([half, half])["w"].dtype == torch.float16


def test_bad_ingredients_are_refused() -> None:
    a, b = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="at least two"):
        average_state_dicts([a])
    with pytest.raises(ValueError, match="tensors"):
        average_state_dicts([a, {"v": torch.zeros(2)}])
    with pytest.raises(ValueError, match="shapes"):
        average_state_dicts([a, {"w": torch.zeros(3)}])
    with pytest.raises(ValueError, match="weights"):
        average_state_dicts([a, b], [1, -1])
    with pytest.raises(ValueError, match="non-float"):
        average_state_dicts([{"n": torch.tensor(1)}, {"n": torch.tensor(2)}])


def test_model_folders_average_and_record_their_ingredients(tmp_path: Path) -> None:
    folders = []
    for seed in (0, 1):
        model, opts = _head(seed)
        folders.append(save_model_folder(model, tmp_path / f"m{seed}", name="prompt_free_head", options=opts,
                                         img_size=64, extra={"note": "same", "seed": seed}))
    out = average_model_folders(folders, tmp_path / "soup")
    soup = load_model(out)
    ingredients = [load_model(f) for f in folders]
    for k, v in soup.model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (ingredients[0].model.state_dict()[k]
                                           + ingredients[1].model.state_dict()[k]) / 2)
    assert soup.meta["note"] == "same" and "seed" not in soup.meta
    assert [a["sha256"] for a in soup.meta["averaged_from"]] == [m.meta["sha256"] for m in ingredients]
    other, opts = _head(2, classifier_hidden=8)
    save_model_folder(other, tmp_path / "other", name="prompt_free_head", options=opts, img_size=64)
    with pytest.raises(InvalidInputError, match="other"):
        average_model_folders([folders[0], tmp_path / "other"], tmp_path / "bad")
