"""Ship a trained model with medseg: copy its folder into ``src/medseg/assets/<name>/`` and register the sha256
of its ``model.json`` (which pins every part's weights) in ``medseg.weights.SHIPPED_MODELS``.

    python benchmarks/ship_model.py runs/universal-cpu/model --name universal [--max-mb 60]
    python benchmarks/ship_model.py FOLDER --meta 'routing_temperature={"main": 0.25}'   # set model.json fields
    python benchmarks/ship_model.py src/medseg/assets/universal --part \
        specialists/retinal-vessel=runs/universal-cpu-specialist-aug/ensemble-ms/specialists/retinal-vessel-combined/model
    # (--part replaces parts of a universal folder first: e.g. a retrained specialist)

Refuses a folder whose parts fail their hash checks or that is larger than ``--max-mb``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from pathlib import Path

from medseg.models.io import load_model
from medseg.models.universal import replace_parts
from medseg.utils.atomic import atomic_write_text
from medseg.weights import sha256_file

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--name", default="universal")
    ap.add_argument("--max-mb", type=float, default=60.0)
    ap.add_argument("--meta", nargs="*", default=[], metavar="KEY=JSON",
                    help="set (or replace) top-level fields of the shipped model.json (not its parts' hashes)")
    ap.add_argument("--part", nargs="*", default=[], metavar="PART=FOLDER",
                    help="replace a part of a universal model folder (e.g. specialists/retinal-vessel=runs/…/model; "
                         "medseg.models.universal.replace_parts) before shipping")
    args = ap.parse_args()
    parts = dict(item.partition("=")[::2] for item in args.part)
    if any(not k or not v for k, v in parts.items()):
        raise SystemExit(f"--part takes PART=FOLDER, got {args.part}")
    with tempfile.TemporaryDirectory() as tmp:
        if parts:
            args.folder = replace_parts(args.folder, Path(tmp) / "model", parts)
        ship(args)


def ship(args: argparse.Namespace) -> None:
    meta = {}
    for item in args.meta:
        key, _, value = item.partition("=")
        if key in ("parts", "name", "tasks", "engines") or not value:
            raise SystemExit(f"--meta {item!r}: give KEY=JSON for a field other than parts, name, tasks, engines")
        meta[key] = json.loads(value)
    load_model(args.folder)  # every part hash-checked, the model builds
    size = sum(p.stat().st_size for p in args.folder.rglob("*") if p.is_file())
    if size > args.max_mb * 1e6:
        raise SystemExit(f"{args.folder}: {size / 1e6:.1f} MB is over the {args.max_mb:g} MB allowed")
    dest = REPO / "src" / "medseg" / "assets" / args.name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(args.folder, dest, ignore=shutil.ignore_patterns(".*"))
    if meta:
        spec = json.loads((dest / "model.json").read_text())
        atomic_write_text(dest / "model.json", json.dumps({**spec, **meta}, indent=2))
        load_model(dest)  # still loads, every part hash-checked
    digest = sha256_file(dest / "model.json")
    weights = REPO / "src" / "medseg" / "weights.py"
    text = weights.read_text()
    entries = dict(re.findall(r'"([\w-]+)": "([0-9a-f]{64})"', text.split("SHIPPED_MODELS")[1].split("}")[0]))
    entries[args.name] = digest
    body = "{" + ", ".join(f'"{k}": "{v}"' for k, v in sorted(entries.items())) + "}"
    text = re.sub(r"SHIPPED_MODELS: dict\[str, str\] = \{[^}]*\}", f"SHIPPED_MODELS: dict[str, str] = {body}", text)
    weights.write_text(text)
    print(f"{args.folder} → {dest} ({size / 1e6:.1f} MB), model.json sha256 {digest}")


if __name__ == "__main__":
    main()
