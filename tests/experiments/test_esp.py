"""The ESP-MedSAM experiment end to end at test scale: every stage runs, the report has the source-domain and
task-accuracy tables, a second run reuses every stage, and a run killed in a stage resumes there."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medseg.data import generate_dataset
from medseg.experiments.esp import EspExperiment, ablation_table, load_esp_config, unseen_domain_table
from tests.conftest import Killed, kill_training_after_checkpoint, tiny_model_config

SIZES = ("embed_dims", "depths", "num_heads", "window_sizes", "prompt_embed_dim", "decoder_mlp_dim", "decoder_heads")
TEACHER = {k: v for k, v in tiny_model_config("esp_medsam_teacher").items() if k not in ("img_size", "tasks")}
STUDENT = {k: v for k, v in tiny_model_config("esp_medsam").items() if k not in ("img_size", "tasks")}
LITE = {k: v for k, v in TEACHER.items() if k in SIZES}


def _tiny_lite_medsam_state(name: str, **kwargs):
    import torch

    from medseg.models import build_model

    torch.manual_seed(0)
    return build_model("lite_medsam", img_size=64, **LITE).state_dict()


def _config(tmp_path: Path, **changes) -> Path:
    import shutil

    root = generate_dataset(tmp_path / "d", per_modality=8, size=48, seed=0, modalities=("xray", "dermoscopy"))
    other = generate_dataset(tmp_path / "d2", per_modality=4, size=48, seed=1, modalities=("xray",))
    shutil.move(other / "xray" / "synthetic_lungs", root / "xray" / "other_lungs")  # a second lung dataset
    path = tmp_path / "esp.yaml"
    path.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "run"), "data": {"root": str(root), "img_size": 64},
        "split": {"test": 0.25, "val": 0.25},
        "teacher": {"steps": 2, "batch_size": 4, "freeze": ["image_encoder.encoder"]},
        "mmdkd": {"steps": 2, "batch_size": 4}, "train": {"steps": 12, "batch_size": 2,
                  "lr_multipliers": {"patch_prompt": 10, "classifier": 10}},  # the variants drop what they lack
        "teacher_model": TEACHER, "student": STUDENT, "lite_medsam": LITE,
        "trainer": {"accelerator": "cpu", "progress_bar": False}, **changes}))
    return path


def test_esp_experiment_runs_every_stage_and_reuses_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("medseg.weights.fetch_weights", _tiny_lite_medsam_state)
    cfg = load_esp_config(_config(tmp_path, data={"root": str(tmp_path / "d"), "img_size": 64,
                                                  "target_of": {"synthetic_lungs": "lungs", "other_lungs": "lungs"}},
                                  unseen=["other_lungs"], ablations=["no_teacher_adaptation", "no_bags", "no_sppg",
                                                                     "no_qdmd", "seed_replicate",
                                                                     "sppg_sam_mask"]))
    said: list[str] = []
    report = EspExperiment(cfg, progress=said.append).run()
    text = report.read_text()
    assert "Source domains" in text and "Task classification" in text and "Wall time per stage" in text
    assert "Unseen domains: other_lungs" in text and "| no_sppg |" in text and "| no_teacher_adaptation |" in text
    assert "dice_esp_seen" in (tmp_path / "run" / "report" / "unseen_domain.csv").read_text()
    assert "dice_esp_true_task_source" in (tmp_path / "run" / "report" / "unseen_control.csv").read_text()
    assert "dice_no_sppg" in (tmp_path / "run" / "report" / "ablation_by_modality.csv").read_text()
    run = tmp_path / "run"
    for stage in ("teacher", "mmdkd", "esp", "classifier", "unseen/teacher", "unseen/mmdkd", "unseen/esp",
                  "unseen/classifier", "ablation-no_teacher_adaptation/mmdkd", "ablation-no_qdmd/esp",
                  "ablation-no_qdmd/classifier"):
        assert (run / stage / "model" / "model.json").is_file(), stage
    # the refitted model differs from esp/ in the classifier's head only, and is the one scored
    from medseg.models.io import load_model

    esp, refit = (load_model(run / s / "model").model.state_dict() for s in ("esp", "classifier"))
    assert {k for k in esp if not esp[k].equal(refit[k])} <= {k for k in esp if k.startswith("classifier.head.")}
    assert "refitted on frozen features" in text and (run / "classifier" / "history.csv").is_file()
    assert not (run / "ablation-no_sppg" / "mmdkd").exists()  # variants reuse the full model's earlier stages
    # the replicate is the full model trained again with the next seed, from the same MMDKD start
    seeds = {v: yaml.safe_load((run / v / "esp" / "config.yaml").read_text())["seed"]
             for v in (".", "ablation-seed_replicate", "ablation-no_qdmd")}
    assert seeds == {".": cfg.seed, "ablation-seed_replicate": cfg.seed + 1, "ablation-no_qdmd": cfg.seed}
    assert "| seed_replicate |" in text
    sam_mask = yaml.safe_load((run / "ablation-sppg_sam_mask" / "esp" / "config.yaml").read_text())["model"]
    assert sam_mask["options"]["dense_prompt"] == "sam_mask" and sam_mask["init_mode"] == "shared"
    unseen_train = [r for r in (run / "unseen" / "split.csv").read_text().splitlines() if "other_lungs" in r]
    assert unseen_train and all(r.split(",")[-1] == "test" for r in unseen_train)
    assert {r.split(",")[1] for r in (run / "unseen" / "scores" / "esp.csv").read_text().splitlines()[1:]} \
        <= {"other_lungs", "xray"}
    rows = (run / "scores" / "esp.csv").read_text().splitlines()
    assert "task" in rows[0].split(",") and "true_task" in rows[0].split(",") and len(rows) > 2
    assert (run / "scores" / "lite_medsam_gt_box.csv").is_file()
    said.clear()
    EspExperiment(cfg, progress=said.append).run()
    assert said == []  # everything cached


def test_a_killed_esp_experiment_resumes_in_its_stage(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("medseg.weights.fetch_weights", _tiny_lite_medsam_state)
    cfg = load_esp_config(_config(tmp_path))
    calls = kill_training_after_checkpoint(monkeypatch, "esp")
    with pytest.raises(Killed):
        EspExperiment(cfg, progress=lambda m: None).run()
    calls.clear()
    said: list[str] = []
    assert EspExperiment(cfg, progress=said.append).run().is_file()
    assert calls[0] == ("esp", True) and not any(m.startswith(("teacher", "mmdkd")) for m in said)


def _row(modality: str, dataset: str, case: str, dice: float, task: str = "t", true_task: str = "t") -> dict[str, str]:
    return {"modality": modality, "dataset": dataset, "case": case, "dice": str(dice), "nsd": str(dice),
            "hd95": "1.0", "task": task, "true_task": true_task}


def test_unseen_table_puts_the_full_models_scores_on_the_same_images_beside_it() -> None:
    unseen = {"esp": [_row("fundus", "chase", "a", 0.2), _row("fundus", "chase", "b", 0.4),
                      _row("skin", "ph2", "c", 0.5)]}
    seen = [_row("fundus", "chase", "a", 0.6), _row("fundus", "chase", "b", 0.8), _row("skin", "ph2", "c", 0.9),
            _row("skin", "isic", "d", 0.1)]  # isic was not held out: not in the table
    table = {r["dataset"]: r for r in unseen_domain_table(unseen, seen)}
    assert set(table) == {"chase", "ph2", "mean over datasets"}
    assert table["chase"]["dice_esp"] == pytest.approx(0.3) and table["chase"]["dice_esp_seen"] == pytest.approx(0.7)
    assert table["mean over datasets"]["dice_esp"] == pytest.approx(0.4)
    assert table["mean over datasets"]["dice_esp_seen"] == pytest.approx(0.8)


def test_ablation_table_is_the_mean_over_modalities_and_the_change_from_the_full_model() -> None:
    full = [_row("a", "x", "1", 0.8), _row("a", "x", "2", 0.6), _row("b", "y", "3", 0.4)]  # (0.7 + 0.4) / 2
    worse = [_row("a", "x", "1", 0.5), _row("a", "x", "2", 0.5), _row("b", "y", "3", 0.2, task="u")]
    table = ablation_table(full, {"no_bags": worse})
    assert [r["variant"] for r in table] == ["full ESP-MedSAM", "no_bags"]
    assert table[0]["dice"] == pytest.approx(0.55) and table[1]["dice"] == pytest.approx(0.35)
    assert table[1]["dice_change"] == pytest.approx(-0.2) and table[1]["task_accuracy"] == pytest.approx(2 / 3)
    # every image lost: the paired interval of the change lies below zero and contains it
    assert table[1]["change_ci_low"] <= -0.2 <= table[1]["change_ci_high"] < 0
    same = ablation_table(full, {"same": full})[1]
    assert same["dice_change"] == 0 and same["change_ci_low"] == same["change_ci_high"] == 0
    assert same["p_wilcoxon"] == 1.0


def test_from_head_starts_the_students_decoder_from_a_trained_head(tmp_path: Path, monkeypatch) -> None:
    import torch

    from medseg.models import build_model
    from medseg.models.io import load_model, save_model_folder
    from tests.conftest import tiny_model_config

    monkeypatch.setattr("medseg.weights.fetch_weights", _tiny_lite_medsam_state)
    path = _config(tmp_path, ablations=["from_head"], head=str(tmp_path / "head"), train={"steps": 4, "batch_size": 2},
                   baseline=False, classifier=None)
    cfg = load_esp_config(path)
    exp = EspExperiment(cfg, progress=lambda m: None)
    tasks = sorted({exp.task_of(e) for e in exp.entries() if e.split != "test"})
    torch.manual_seed(1)
    head = build_model("prompt_free_head", **{**tiny_model_config("prompt_free_head"), "tasks": tasks})
    save_model_folder(head, tmp_path / "head", name="prompt_free_head",
                      options={**tiny_model_config("prompt_free_head"), "tasks": tasks}, img_size=64)
    text = exp.run().read_text()
    assert "| from_head |" in text
    run = tmp_path / "run"
    start = load_model(run / "ablation-from_head" / "head_init" / "model")
    theirs, mmdkd = head.state_dict(), load_model(run / "mmdkd" / "model").model.state_dict()
    grafted = start.model.state_dict()
    assert all(torch.equal(grafted[k], theirs[k]) for k in start.meta["decoder_from"]["copied"])
    assert all(torch.equal(grafted[k], v) for k, v in mmdkd.items() if k.startswith("image_encoder."))
    assert start.meta["decoder_from"]["sha256"] == load_model(tmp_path / "head").meta["sha256"]
    # the student decodes as the head does: SAM's mask prompt encoder takes the patch prompt, in head_init and in
    # the training started from it
    assert start.meta["options"]["dense_prompt"] == "sam_mask" and start.model.patch_prompt.dense is None
    trained = yaml.safe_load((run / "ablation-from_head" / "esp" / "config.yaml").read_text())["model"]
    assert trained["options"]["dense_prompt"] == "sam_mask" and trained["init_mode"] == "strict"
    # a head for other tasks: one line naming both task lists, before anything trains
    other = tmp_path / "other"
    opts = {**tiny_model_config("prompt_free_head"), "tasks": ["a", "b"]}
    save_model_folder(build_model("prompt_free_head", **opts), other, name="prompt_free_head", options=opts,
                      img_size=64)
    import shutil

    shutil.rmtree(run / "ablation-from_head")
    cfg2 = load_esp_config(path, [f"head={other}"])
    with pytest.raises(ValueError, match="tasks"):
        EspExperiment(cfg2, progress=lambda m: None).run()
