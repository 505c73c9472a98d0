"""End-to-end CLI tests through ``medseg.cli.main`` (the console script's function)."""

import csv
import json

import numpy as np
from PIL import Image

from medseg.cli.main import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert "medseg" in capsys.readouterr().out


def test_synth_scan_split_convert(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["data", "synth", str(root), "--per-modality", "5", "--size", "48"]) == 0
    assert main(["data", "scan", str(root), "--markdown", str(tmp_path / "s.md"), "--json", str(tmp_path / "s.json"),
                 "--csv", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert "microscopy" in out and "0 errors" in out
    payload = json.loads((tmp_path / "s.json").read_text())
    assert sum(g["files"] for g in payload["groups"]) == 30 and payload["problems"] == []
    assert main(["data", "split", str(root), "-o", str(tmp_path / "m.csv"), "--protocol", "cmmc",
                 "--train-fraction", "0.5"]) == 0
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert len(rows) == 30 and {r["split"] for r in rows} == {"train", "test", "unused"}
    assert main(["data", "convert", str(root), str(tmp_path / "npz"), "--to", "npz", "--max-size", "32"]) == 0
    assert len(list((tmp_path / "npz").rglob("*.npz"))) == 30


def test_bad_input_gives_one_line_error(tmp_path, capsys):
    root = tmp_path / "d" / "fundus" / "x"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "images" / "a.png")
    (root / "masks" / "a.png").write_bytes(b"broken")
    assert main(["data", "scan", str(tmp_path / "d"), "--strict"]) == 1
    assert "a.png" in capsys.readouterr().out
    assert main(["data", "scan", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err
    assert main(["data", "synth", str(tmp_path / "s"), "--modality", "thermography"]) == 2


def test_demo_writes_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--per-modality", "4", "--size", "64",
                 "--steps", "5"]) == 0
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "overlays.png" in report and "dice_unet" in report and "dice_otsu" in report
    assert (tmp_path / "demo" / "run" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "demo" / "overlays.png").is_file() and (tmp_path / "demo" / "metrics.csv").is_file()
    assert "dermoscopy" in capsys.readouterr().out
