"""The universal-model experiment end to end at test scale: embedding cache → head → specialist → engine per task
chosen on validation → model folder → test scores → report; a second run reuses every stage, and the model folder
segments a folder through ``medseg predict`` with no prompt and no task."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from medseg.cli.main import main
from medseg.data import generate_dataset
from medseg.errors import MedsegError
from medseg.experiments.universal import UniversalExperiment, load_universal_config
from tests.conftest import tiny_model_config
from tests.training.test_embedding_data import LITE, tiny_lite_medsam_state

UNET = {k: v for k, v in tiny_model_config("resnet_unet").items()}
STUDENT = {k: v for k, v in tiny_model_config("lite_medsam_student").items()
           if k in ("embed_dims", "depths", "num_heads", "window_sizes")}


@pytest.fixture()
def config(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    root = generate_dataset(tmp_path / "d", per_modality=8, size=48, seed=0, modalities=("xray", "fundus"))
    path = tmp_path / "universal.yaml"
    path.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "run"), "data": {"root": str(root), "img_size": 64},
        "split": {"test": 0.25, "val": 0.25}, "encoder": {"pretrained": True, **LITE},
        "embeddings": {"views": ["none", "hflip"], "engine": "eager", "batch_size": 4},
        "head": {"steps": 4, "batch_size": 3, "validations": 2, "model": {"classifier_hidden": 16}},
        "specialists": {"synthetic_vessels": {"steps": 3, "patch_size": 32, "patches_per_epoch": 8,
                                              "model": UNET}},
        "fast": {"steps": 2, "batch_size": 3, "validations": 1, "student": STUDENT},
        "trainer": {"accelerator": "cpu", "progress_bar": False}}))
    return path


def test_universal_experiment_runs_every_stage_and_reuses_them(config: Path, tmp_path: Path, capsys) -> None:
    cfg = load_universal_config(config)
    said: list[str] = []
    report = UniversalExperiment(cfg, progress=said.append).run()
    text = report.read_text()
    assert "Mean Dice per modality" in text and "Task classification" in text and "Engine per task" in text
    run = tmp_path / "run"
    for stage in ("head/model", "specialists/synthetic_vessels/model", "fast/model", "model", "model/head",
                  "model/student"):
        assert (run / stage / "model.json").is_file(), stage
    assert yaml.safe_load((run / "model" / "head" / "model.json").read_text())["stored_dtype"] == "torch.float16"
    assert (run / "model" / "head" / "model.safetensors").stat().st_size < (
        run / "head" / "model" / "model.safetensors").stat().st_size * 0.6
    manifest = yaml.safe_load((run / "embeddings" / "manifest.json").read_text())
    assert set(manifest["train"]) == {"none", "hflip"}
    with open(run / "selection" / "selection.csv", newline="") as f:
        rows = {r["task"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"synthetic_lungs", "synthetic_vessels"} and rows["synthetic_lungs"]["engine"] == "head"
    with open(run / "scores" / "fast.csv", newline="") as f:
        assert {r["engine"] for r in csv.DictReader(f)} == {"head"}  # the student feeds the head everywhere
    with open(run / "scores" / "universal.csv", newline="") as f:
        scored = list(csv.DictReader(f))
    assert scored and {"task", "task_probability", "engine", "true_task", "dice"} <= set(scored[0])
    for name in ("by_modality", "by_dataset", "task_accuracy"):
        assert (run / "report" / f"{name}.csv").is_file()
    assert (run / "report" / "head_learning_curve.png").is_file()
    card = (run / "report" / "MODEL_CARD.md").read_text()  # each part: what it is, how it is fed, its weights
    assert "| head | prompt_free_head | 64² canvas | float16 |" in card and "| student | lite_medsam_student |" in card
    said.clear()
    UniversalExperiment(cfg, progress=said.append).run()  # everything cached: nothing trains or scores again
    assert not said

    images = tmp_path / "inputs"
    images.mkdir()
    for f in sorted((tmp_path / "d").glob("*/*/images/*.png"))[:3]:
        (images / f.name.replace(".png", f"_{f.parent.parent.name}.png")).write_bytes(f.read_bytes())
    out = tmp_path / "pred"
    assert main(["predict", str(run / "model"), str(images), "-o", str(out), "--min-confidence", "1.0"]) == 0
    said = capsys.readouterr()
    with open(out / "tasks.csv", newline="") as f:
        tasks = list(csv.DictReader(f))
    assert len(tasks) == 3 and {"task", "probability", "engine", "confident"} <= set(tasks[0])
    assert all(t["confident"] == "False" for t in tasks) and "unsure" in said.err
    assert main(["predict", str(run / "model"), str(images), "-o", str(tmp_path / "p2"), "--task", "liver"]) == 2
    assert "synthetic_lungs" in capsys.readouterr().err
    assert main(["predict", str(run / "model"), str(images), "-o", str(tmp_path / "p3"), "--fast"]) == 0
    with open(tmp_path / "p3" / "tasks.csv", newline="") as f:
        assert {r["engine"] for r in csv.DictReader(f)} == {"head"}
    assert main(["predict", str(run / "model"), str(images), "-o", str(tmp_path / "p5"), "--fast",
                 "--keep-specialists", "--task", "synthetic_vessels"]) == 0
    with open(tmp_path / "p5" / "tasks.csv", newline="") as f:
        vessels = yaml.safe_load((run / "model" / "model.json").read_text())["engines"]["synthetic_vessels"]
        assert {r["engine"] for r in csv.DictReader(f)} == {vessels}  # its engine kept under --fast
    assert (run / "scores" / "fast_specialists.csv").is_file() == (vessels == "specialist")
    assert main(["predict", str(run / "model"), str(images), "-o", str(tmp_path / "p6"), "--keep-specialists"]) == 2
    assert "fast mode only" in capsys.readouterr().err
    assert main(["predict", str(run / "specialists" / "synthetic_vessels" / "model"), str(images), "-o",
                 str(tmp_path / "p4"), "--fast"]) == 2
    assert "universal model only" in capsys.readouterr().err


def test_a_changed_specialist_is_not_reused(config: Path, tmp_path: Path) -> None:
    cfg = load_universal_config(config)
    exp = UniversalExperiment(cfg, progress=lambda m: None)
    exp.stage_specialists()
    changed = load_universal_config(config, ["specialists.synthetic_vessels.lr=0.5"])
    with pytest.raises(MedsegError, match="specialist"):
        UniversalExperiment(changed, progress=lambda m: None).stage_specialists()


def test_a_specialist_trains_with_its_own_augmentation(config: Path, tmp_path: Path) -> None:
    augment = {"flips": True, "affine_p": 1.0, "scale": [0.7, 1.4], "colour_p": 1.0}
    cfg = load_universal_config(config, [f"specialists.synthetic_vessels.augment={augment}"])
    UniversalExperiment(cfg, progress=lambda m: None).stage_specialists()
    trained = yaml.safe_load((tmp_path / "run" / "specialists" / "synthetic_vessels" / "config.yaml").read_text())
    assert trained["data"]["augment"]["colour_p"] == 1.0 and trained["data"]["augment"]["scale"] == [0.7, 1.4]
    assert (tmp_path / "run" / "specialists" / "synthetic_vessels" / "model").is_dir()


def test_a_specialist_recorded_before_an_option_existed_resumes_only_at_its_default(config: Path,
                                                                                    tmp_path: Path) -> None:
    """A specialist stage recorded before ``augment`` existed is reused with the default augmentation; a
    non-default one is a change (the option counts as recorded at its default, not at the config's value)."""
    import json

    UniversalExperiment(load_universal_config(config), progress=lambda m: None).stage_specialists()
    record = tmp_path / "run" / "specialists" / "synthetic_vessels" / "settings.json"
    old = json.loads(record.read_text())
    del old["specialist"]["augment"]
    record.write_text(json.dumps(old))
    said: list[str] = []
    UniversalExperiment(load_universal_config(config), progress=said.append).stage_specialists()
    assert not any("U-Net" in m for m in said)  # reused, not retrained
    changed = load_universal_config(config, ["specialists.synthetic_vessels.augment={colour_p: 1.0}"])
    with pytest.raises(MedsegError, match="specialist settings"):
        UniversalExperiment(changed, progress=lambda m: None).stage_specialists()


def test_seed_offsets_replicate_a_training_on_the_same_split(config: Path, tmp_path: Path) -> None:
    """``seed_offset`` moves a stage's training seed (a specialist's, the head's) and leaves the split's alone."""
    cfg = load_universal_config(config, ["specialists.synthetic_vessels.seed_offset=3", "head.seed_offset=2"])
    exp = UniversalExperiment(cfg, progress=lambda m: None)
    exp.stage_specialists()
    trained = yaml.safe_load((tmp_path / "run" / "specialists" / "synthetic_vessels" / "config.yaml").read_text())
    assert trained["seed"] == cfg.seed + 3
    assert exp.common_patch(cfg.head, tmp_path / "h", exp.stage_split())["seed"] == cfg.seed + 2
    plain = UniversalExperiment(load_universal_config(config), progress=lambda m: None)
    assert plain.common_patch(plain.cfg.head, tmp_path / "h", plain.stage_split())["seed"] == cfg.seed


def test_the_headline_number_is_the_mean_over_modalities_of_dataset_means() -> None:
    """LiteMedSAM with ground-truth boxes on the reference test split: 0.694 in the issue's form (mean over the 8
    modalities of each modality's dataset means), 0.786 as the mean over the 340 images."""
    from types import SimpleNamespace

    from medseg.experiments.universal_report import baseline_scores, dataset_table, modality_table

    results = Path(__file__).parents[2] / "benchmarks" / "results"
    with open(results / "lite_medsam_gt_box_per_image.csv", newline="") as f:
        test = [SimpleNamespace(dataset=r["dataset"], case_id=r["case"]) for r in csv.DictReader(f)]
    scores = baseline_scores(results, test)
    by_modality = modality_table(scores)
    assert by_modality[-1]["modality"] == "mean over modalities" and len(by_modality) == 9
    assert round(by_modality[-1]["dice_lite_medsam_gt_box"], 3) == 0.694
    rows = scores["lite_medsam_gt_box"]
    assert round(sum(float(r["dice"]) for r in rows) / len(rows), 3) == 0.786
    table = dataset_table(scores)
    assert len(table) == 14 and table[-1]["n"] == 340
    with pytest.raises(FileNotFoundError, match="another split"):
        baseline_scores(results, [*test, SimpleNamespace(dataset="x", case_id="y")])


def _held_out_config(tmp_path: Path, root: Path, name: str, **extra) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / name), "cache_dir": str(tmp_path / "cache"),
        "data": {"root": str(root), "img_size": 64,
                 "target_of": {"synthetic_lesions": "blob", "synthetic_polyps": "blob"}},
        "split": {"test": 0.25, "val": 0.25}, "encoder": {"pretrained": True, **LITE},
        "embeddings": {"views": ["none"], "engine": "eager", "batch_size": 4},
        "head": {"steps": 3, "batch_size": 3, "validations": 1, "model": {"classifier_hidden": 16}},
        "trainer": {"accelerator": "cpu", "progress_bar": False}, **extra}))
    return path


def test_held_out_datasets_stay_out_of_training_and_are_compared_with_the_in_domain_run(tmp_path: Path,
                                                                                          monkeypatch) -> None:
    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    root = generate_dataset(tmp_path / "d", per_modality=8, size=48, seed=0,
                            modalities=("dermoscopy", "endoscopy", "xray"))
    UniversalExperiment(load_universal_config(_held_out_config(tmp_path, root, "in_domain")),
                        progress=lambda m: None).run()
    said: list[str] = []
    cfg = load_universal_config(_held_out_config(tmp_path, root, "held", held_out=["synthetic_polyps"],
                                                 in_domain=str(tmp_path / "in_domain" / "scores")))
    exp = UniversalExperiment(cfg, progress=said.append)
    report = exp.run()
    assert not any(m.startswith("embeddings") for m in said)  # the shared cache: nothing encoded again
    assert "without synthetic_polyps" in " ".join(said)
    assert all(e.dataset != "synthetic_polyps" for e in exp.trained_entries())
    with open(tmp_path / "held" / "selection" / "val_head.csv", newline="") as f:
        assert {r["dataset"] for r in csv.DictReader(f)} == {"synthetic_lesions", "synthetic_lungs"}
    trained_on = yaml.safe_load((tmp_path / "held" / "model" / "model.json").read_text())["trained_on"]
    assert trained_on["held_out"] == ["synthetic_polyps"] and "synthetic_polyps" not in trained_on["datasets"]
    with open(tmp_path / "held" / "report" / "held_out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["dataset"] for r in rows} == {"synthetic_polyps"} and {"universal", "head"} <= {r["method"] for r in rows}
    assert "Held-out datasets" in report.read_text()
    for bad, match in ((["nope"], "no dataset 'nope'"), (["synthetic_lungs"], "no training dataset left")):
        cfg = load_universal_config(_held_out_config(tmp_path, root, "bad", held_out=bad))
        with pytest.raises(MedsegError, match=match):
            UniversalExperiment(cfg, progress=lambda m: None).run()


def test_the_classifier_refit_sees_the_jittered_views_and_leaves_segmentation_as_trained(tmp_path: Path,
                                                                                         monkeypatch) -> None:
    import json

    import torch
    from safetensors.torch import load_file

    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    root = generate_dataset(tmp_path / "d", per_modality=6, size=48, seed=0,
                            modalities=("dermoscopy", "endoscopy", "xray"))
    said: list[str] = []
    refit = {"views": ["none", "jitter1"], "steps": 20}
    exp = UniversalExperiment(load_universal_config(_held_out_config(
        tmp_path, root, "refit", held_out=["synthetic_polyps"], classifier=refit)), progress=said.append)
    exp.run()
    summary = json.loads((tmp_path / "refit" / "classifier" / "summary.json").read_text())
    n_train = sum(e.split == "train" for e in exp.trained_entries())
    assert summary["train_rows"] == 2 * n_train and summary["views"] == ["none", "jitter1"]
    assert set(summary["val_accuracy_per_dataset"]) <= {"synthetic_lesions", "synthetic_lungs"}
    assert any("embeddings train/jitter1" in m or m.startswith("classifier:") for m in said)
    head = load_file(str(tmp_path / "refit" / "head" / "model" / "model.safetensors"))
    shipped = load_file(str(tmp_path / "refit" / "model" / "head" / "model.safetensors"))
    changed = {k for k in head if not torch.equal(head[k].half(), shipped[k].half())}
    assert changed and all(k.startswith("classifier.") for k in changed)
    assert "Task classifier refit" in (tmp_path / "refit" / "report" / "report.md").read_text()
    # the refit is part of the model: another refit setting is refused until its stage is rebuilt
    again = _held_out_config(tmp_path, root, "refit", held_out=["synthetic_polyps"], classifier={**refit, "steps": 5})
    with pytest.raises(MedsegError, match="classifier"):
        UniversalExperiment(load_universal_config(again), progress=lambda m: None).run()
    # an ensemble refit widens the head; its model folder says so and loads (benchmarks/refit_classifier.py's path)
    from medseg.models.io import load_model

    ens = UniversalExperiment(load_universal_config(_held_out_config(
        tmp_path, root, "refit", held_out=["synthetic_polyps"], classifier={**refit, "ensemble": 3})),
        progress=lambda m: None)
    ens.begin()
    loaded = load_model(ens.refit_classifier(tmp_path / "refit" / "head" / "model", tmp_path / "ensemble"))
    assert loaded.meta["options"]["classifier_hidden"] == 3 * 16 == loaded.model.classifier.head[1].out_features
    assert len(loaded.meta["classifier_refit"]["members"]) == 3
    from medseg.experiments.universal_report import part_rows
    from medseg.models.universal import replace_parts

    swapped = replace_parts(tmp_path / "refit" / "model", tmp_path / "swapped",
                            {"head": tmp_path / "ensemble" / "model"})
    head_row = next(r for r in part_rows(swapped) if r["part"] == "head")
    assert head_row["model"].endswith("task classifier: mean logits of 3 refits")


def test_a_section_tracked_since_a_stage_was_built_is_a_change_only_off_its_default(config: Path) -> None:
    """Stages recorded before ``held_out`` existed are reused while it is empty, and refused once it holds out a
    dataset (the record cannot say the stage was built without it)."""
    import json

    cfg = load_universal_config(config)
    UniversalExperiment(cfg, progress=lambda m: None).stage_head()
    record = Path(cfg.out_dir) / "head" / "settings.json"
    old = json.loads(record.read_text())
    del old["held_out"]
    record.write_text(json.dumps(old))
    UniversalExperiment(cfg, progress=lambda m: None).stage_head()  # reused
    held = load_universal_config(config, ["held_out=[synthetic_lungs]"])
    with pytest.raises(MedsegError, match="held_out"):
        UniversalExperiment(held, progress=lambda m: None).stage_head()


def test_the_resized_fast_encoder_gets_a_fine_tuned_head_and_ships_no_encoder_weights(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """``fast.encoder_input_size``: LiteMedSAM's own encoder at a smaller side; the refitted head is fine-tuned on
    its embeddings (and refitted again); the model folder stores that head and names the encoder, and ``--fast``
    runs them."""
    import json

    import numpy as np

    from medseg.inference.universal import UniversalPredictor
    from medseg.models.io import load_model
    from medseg.models.resized_encoder import ResizedEncoder

    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    root = generate_dataset(tmp_path / "d", per_modality=6, size=48, seed=0, modalities=("dermoscopy", "xray"))
    fast = {"encoder_input_size": 32, "steps": 3, "batch_size": 3, "validations": 1, "views": ["none", "jitter1"]}
    said: list[str] = []
    exp = UniversalExperiment(load_universal_config(_held_out_config(
        tmp_path, root, "fast", classifier={"views": ["none"], "steps": 5}, fast=fast)), progress=said.append)
    exp.run()
    run = tmp_path / "fast"
    assert (run / "fast" / "head" / "model" / "model.json").is_file()
    assert (run / "fast" / "classifier" / "summary.json").is_file()
    meta = json.loads((run / "model" / "model.json").read_text())
    assert set(meta["parts"]) == {"head", "fast_head"}
    assert meta["fast_encoder"]["options"]["encoder_input_size"] == 32
    assert any(m.startswith("fast: the head fine-tuned") for m in said)
    model = load_model(run / "model").model
    assert isinstance(model.student.image_encoder, ResizedEncoder) and model.fast_head is not model.head
    images = [np.random.default_rng(i).integers(0, 255, (40, 52, 3), dtype=np.uint8) for i in range(2)]
    preds = UniversalPredictor(model, engine="eager", fast=True).predict(images)
    assert [p.mask.shape for p in preds] == [(40, 52)] * 2 and {p.engine for p in preds} == {"head"}
    with open(run / "scores" / "fast.csv", newline="") as f:
        assert {r["engine"] for r in csv.DictReader(f)} == {"head"}
    said.clear()
    UniversalExperiment(load_universal_config(_held_out_config(
        tmp_path, root, "fast", classifier={"views": ["none"], "steps": 5}, fast=fast)), progress=said.append).run()
    assert not said  # every stage reused


def test_an_ensemble_specialist_reuses_its_first_member_and_feeds_at_its_scales(config: Path, tmp_path: Path) -> None:
    """``ensemble_augment`` trains one more U-Net beside the single one (which is reused, not retrained: its
    record is the single config's) and ``scales`` and ``tta`` go into the combined folder's ``model.json``; the
    combination is rebuilt only when a member or the feeding changed."""
    from medseg.models.io import load_model, read_model_meta

    UniversalExperiment(load_universal_config(config), progress=lambda m: None).stage_specialists()
    cfg = load_universal_config(config, ["specialists.synthetic_vessels.ensemble_augment=[{colour_p: 1.0}]",
                                         "specialists.synthetic_vessels.scales=[1.0, 0.8]"])
    said: list[str] = []
    folder = UniversalExperiment(cfg, progress=said.append).stage_specialists()["synthetic_vessels"]
    assert [m for m in said if "U-Net" in m] == [m for m in said if "synthetic_vessels-member1" in m] != []
    member = yaml.safe_load((tmp_path / "run" / "specialists" / "synthetic_vessels-member1" / "config.yaml")
                            .read_text())
    assert member["data"]["augment"]["colour_p"] == 1.0
    loaded = load_model(folder)
    assert loaded.name == "ensemble" and loaded.scales == (1.0, 0.8) and loaded.tile == 32
    assert [m["sha256"] for m in loaded.meta["ensembled_from"]] == [
        read_model_meta(tmp_path / "run" / "specialists" / d / "model")["sha256"]
        for d in ("synthetic_vessels", "synthetic_vessels-member1")]
    before = (folder / "model.json").stat().st_mtime_ns
    assert UniversalExperiment(cfg, progress=lambda m: None).stage_specialists()["synthetic_vessels"] == folder
    assert (folder / "model.json").stat().st_mtime_ns == before
    assert not loaded.tta
    single = load_universal_config(config, ["specialists.synthetic_vessels.scales=[1.0, 0.5]"])
    copied = load_model(UniversalExperiment(single, progress=lambda m: None).stage_specialists()["synthetic_vessels"])
    assert copied.name == "resnet_unet" and copied.scales == (1.0, 0.5) and not copied.tta
    tta = load_universal_config(config, ["specialists.synthetic_vessels.ensemble_augment=[{colour_p: 1.0}]",
                                         "specialists.synthetic_vessels.tta=true"])
    said.clear()
    flipped = UniversalExperiment(tta, progress=said.append).stage_specialists()["synthetic_vessels"]
    assert not [m for m in said if "U-Net" in m]  # the members are reused; only the feeding changed
    assert flipped == folder and load_model(flipped).tta and load_model(flipped).scales == (1.0,)
