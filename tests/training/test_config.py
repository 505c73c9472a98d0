"""Typed YAML configs with dotted overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.errors import InvalidInputError
from medseg.training import dump_config, load_config

REPO = Path(__file__).resolve().parents[2]


def test_yaml_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: resnet_unet\ntrainer:\n  batch_size: 4\n")
    cfg = load_config(p, ["trainer.max_steps=7", "optim.lr=1e-4", "loss.weights={focal_tversky: 1.0}",
                          "model.options.arch=resnet18"])
    assert cfg.model.name == "resnet_unet" and cfg.model.options == {"arch": "resnet18"}
    assert cfg.trainer.batch_size == 4 and cfg.trainer.max_steps == 7 and cfg.optim.lr == 1e-4
    assert cfg.loss.weights == {"focal_tversky": 1.0}
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg


@pytest.mark.parametrize(("text", "override", "match"), [
    ("trainer:\n  batch_size: lots\n", [], r"c.yaml.*trainer.batch_size"),
    ("trainer:\n  batchsize: 3\n", [], r"c.yaml.*trainer.batchsize.*Extra inputs"),
    ("model: [\n", [], r"c.yaml.*cannot read config"),
    ("", ["trainer.max_steps"], r"not of the form"),
])
def test_errors_name_file_and_field(tmp_path: Path, text: str, override: list[str], match: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(InvalidInputError, match=match):
        load_config(p, override)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    load_config(path)
