"""The CMMC experiment end to end at test scale: every stage runs, the report has the tables, and a second run
reuses every stage."""

from __future__ import annotations

from pathlib import Path

import yaml

from medseg.data import generate_dataset
from medseg.experiments.cmmc import CmmcExperiment, load_cmmc_config
from tests.conftest import Killed, kill_training_after_checkpoint

TEACHER = {"embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4],
           "window_sizes": [7, 7, 7, 7], "prompt_embed_dim": 32, "decoder_mlp_dim": 64, "decoder_heads": 2}
STUDENT = {"embed_dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2],
           "window_sizes": [7, 7, 7, 7], "prompt_embed_dim": 32, "decoder_mlp_dim": 64, "decoder_heads": 2}


def test_cmmc_runs_every_stage_and_resumes(tmp_path: Path, monkeypatch) -> None:
    # test scale: the teacher is a tiny random LiteMedSAM (the real weights are not needed for the mechanics)
    monkeypatch.setattr("medseg.weights.fetch_weights", _tiny_teacher_state)
    root = generate_dataset(tmp_path / "d", per_modality=10, size=48, seed=0, modalities=("xray", "fundus"))
    cfg_path = tmp_path / "cmmc.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "run"), "data": {"root": str(root), "img_size": 64},
        "distill": {"steps": 4, "batch_size": 4}, "pretrain": {"steps": 4, "batch_size": 4},
        "finetune": {"steps": 3, "batch_size": 4}, "student": STUDENT, "teacher": TEACHER,
        "trainer": {"accelerator": "cpu"}, "routing": {"n_boot": 200, "folds": 2}}))
    cfg = load_cmmc_config(cfg_path)
    said: list[str] = []
    report = CmmcExperiment(cfg, progress=said.append).run()
    text = report.read_text()
    assert "Table 1" in text and "Table 2, threshold router" in text and "LiteMedSAM" in text
    run = tmp_path / "run"
    for kind in ("raw", "edge"):
        assert (run / f"pretrain-{kind}" / "model" / "model.json").is_file()
        assert len(list((run / "finetune" / kind).glob("*/model/model.json"))) == 2
    assert (run / "report" / "routers.json").is_file() and (run / "report" / "diff_vs_entropy.png").is_file()
    said.clear()
    CmmcExperiment(cfg, progress=said.append).run()
    assert said == []  # everything cached


def _tiny_teacher_state(name: str, **kwargs):
    import torch

    from medseg.models import build_model

    torch.manual_seed(0)
    return build_model("lite_medsam", img_size=64, **TEACHER).state_dict()


def test_a_stage_built_from_other_settings_is_refused(tmp_path: Path) -> None:
    import pytest

    from medseg.errors import MedsegError

    def experiment(**changes) -> CmmcExperiment:
        path = tmp_path / "cmmc.yaml"
        path.write_text(yaml.safe_dump({"out_dir": str(tmp_path / "run"), "data": {"root": str(tmp_path)},
                                        "finetune": {"steps": 3}, **changes}))
        return CmmcExperiment(load_cmmc_config(path))

    record = tmp_path / "run" / "finetune" / "raw" / "xray" / "settings.json"
    experiment()._claim(record, "finetune-raw")  # first claim writes the record
    assert record.is_file()
    experiment()._claim(record, "finetune-raw")  # same settings
    experiment(routing={"folds": 3}, edge="sobel")._claim(record, "finetune-raw")  # no input of this stage
    with pytest.raises(MedsegError, match="built with other finetune settings"):
        experiment(finetune={"steps": 4})._claim(record, "finetune-raw")
    with pytest.raises(MedsegError, match="built with other distill, finetune settings"):
        experiment(finetune={"steps": 4}, distill={"steps": 2})._claim(record, "finetune-raw")
    # a record written before an option existed (here: finetune.validations, at its default) still matches
    import json

    old = json.loads(record.read_text())
    del old["finetune"]["validations"]
    record.write_text(json.dumps(old))
    experiment()._claim(record, "finetune-raw")
    with pytest.raises(MedsegError, match="built with other finetune settings"):
        experiment(finetune={"steps": 3, "validations": 2})._claim(record, "finetune-raw")


def test_a_killed_experiment_resumes_at_its_stage_and_step(tmp_path: Path, monkeypatch) -> None:
    """A kill during pre-training (after its step-10 checkpoint, before the model is saved): the next run skips
    the finished stages, resumes that training from its checkpoint, and finishes."""
    import json

    import pytest

    monkeypatch.setattr("medseg.weights.fetch_weights", _tiny_teacher_state)
    root = generate_dataset(tmp_path / "d", per_modality=8, size=48, seed=0, modalities=("xray", "fundus"))
    cfg_path = tmp_path / "cmmc.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "run"), "data": {"root": str(root), "img_size": 64},
        "distill": {"steps": 2, "batch_size": 4}, "pretrain": {"steps": 12, "batch_size": 2},
        "finetune": {"steps": 2, "batch_size": 4, "freeze": ["image_encoder"]}, "student": STUDENT,
        "teacher": TEACHER, "trainer": {"accelerator": "cpu"}, "routing": {"n_boot": 200, "folds": 2}}))
    cfg = load_cmmc_config(cfg_path)
    calls = kill_training_after_checkpoint(monkeypatch, "pretrain-edge")
    said: list[str] = []
    with pytest.raises(Killed):
        CmmcExperiment(cfg, progress=said.append).run()
    run = tmp_path / "run"
    assert (run / "pretrain-edge" / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "pretrain-edge" / "model").exists()
    said.clear()
    calls.clear()
    report = CmmcExperiment(cfg, progress=said.append).run()
    assert report.is_file()
    assert not any(m.startswith(("distill", "pretrain-raw")) for m in said)  # finished stages are reused
    assert calls[0] == ("pretrain-edge", True)  # resumed from its checkpoint, not restarted
    import torch

    ckpt = torch.load(run / "pretrain-edge" / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 12
    timings = json.loads((run / "timings.json").read_text())
    assert {"distill", "pretrain-raw", "pretrain-edge", "finetune-raw", "report"} <= set(timings)
    assert "Wall time per stage" in report.read_text()
    assert (run / "report" / "scores_box.png").is_file() and (run / "report" / "routing_decisions.png").is_file()
