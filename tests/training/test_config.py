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
    ("trainer:\n  batch_size: 3\n", ["trainer.bogus_key=1"], r"<command line>.*trainer.bogus_key"),
])
def test_errors_name_file_and_field(tmp_path: Path, text: str, override: list[str], match: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(InvalidInputError, match=match):
        load_config(p, override)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    if path.name.startswith("cmmc"):  # experiment configs have their own schema
        from medseg.experiments.cmmc import load_cmmc_config

        load_cmmc_config(path)
    elif path.name.startswith("esp"):
        from medseg.experiments.esp import load_esp_config

        load_esp_config(path)
    elif path.name.startswith("universal"):
        from medseg.experiments.universal import load_universal_config

        load_universal_config(path)
    elif path.name.startswith("medsass"):
        from medseg.experiments.medsass import load_medsass_config

        load_medsass_config(path)
    else:
        load_config(path)


def test_accumulation_and_cpu_bf16_autocast_train(tmp_path: Path) -> None:
    """Gradient accumulation and Lightning's mixed-precision plugin (bf16 autocast, the CPU form of AMP)."""
    from medseg.data import generate_dataset
    from medseg.training import train

    data = generate_dataset(tmp_path / "d", per_modality=4, size=32, seed=0, modalities=("xray",))
    cfg = load_config(None, [f"out_dir={tmp_path / 'run'}", f"data.root={data}", "data.img_size=32",
                             "model.name=basic_unet", "model.options={features: [4, 4, 8, 8, 16, 4]}",
                             "trainer.accumulate_grad_batches=2", "trainer.precision=bf16-mixed",
                             "trainer.max_steps=2", "trainer.batch_size=1", "trainer.accelerator=cpu",
                             "trainer.progress_bar=false"])
    result = train(cfg)
    assert result.global_step == 2 and (result.model_dir / "model.safetensors").is_file()


@pytest.mark.parametrize("objective", ["ssl", "distill"])
def test_a_loss_section_that_does_not_apply_is_an_error(objective: str) -> None:
    """SSL and distillation have their own loss: a ``loss`` override is refused, not silently ignored; their own
    dumped configs (stored in checkpoints, default loss included) still load."""
    from medseg.distill import load_distill_config
    from medseg.ssl.pretrain import load_ssl_config

    load = load_ssl_config if objective == "ssl" else load_distill_config
    with pytest.raises(InvalidInputError, match="loss does not apply"):
        load(None, ["loss.weights={dice: 2.0}"])
    with pytest.raises(InvalidInputError, match=r"data\.embeddings does not apply"):
        load(None, ["data.embeddings={encoder: lite_medsam}"])
    cfg = load(None, [])
    assert type(cfg).model_validate(cfg.model_dump(mode="json")) == cfg


def test_one_run_config_names_its_objective_and_fit_runs_it(tmp_path: Path, monkeypatch) -> None:
    """``objective`` (YAML key or override) picks the config class; an unknown one lists the known ones; ``fit``
    hands the config to that objective's trainer."""
    from medseg.distill import DistillConfig
    from medseg.ssl.pretrain import SslConfig
    from medseg.training import TrainConfig, load_run_config
    from medseg.training.run import OBJECTIVES, fit

    path = tmp_path / "ssl.yaml"
    path.write_text("objective: ssl\nmethod: byol\n")
    assert isinstance(load_run_config(path), SslConfig) and load_run_config(path).method == "byol"
    assert type(load_run_config(None, [])) is TrainConfig
    assert isinstance(load_run_config(None, ["objective=distill"]), DistillConfig)
    with pytest.raises(InvalidInputError, match="known: segmentation, ssl, distill"):
        load_run_config(None, ["objective=contrastive"])
    with pytest.raises(InvalidInputError, match="method"):
        load_run_config(None, ["method=byol"])  # an SSL field in a segmentation run is an error, not ignored
    seen = []
    monkeypatch.setattr("medseg.ssl.pretrain.pretrain", lambda cfg, resume=False: seen.append((cfg, resume)))
    fit(load_run_config(path), resume=True)
    assert seen and seen[0][1] is True and set(OBJECTIVES) == {"segmentation", "ssl", "distill"}
