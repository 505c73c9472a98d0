"""``medseg data``: scan, convert, split, synth."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from medseg.cli.model_cmds import EXIT_PARTIAL, report_skipped
from medseg.cli.options import MaskModeOpt, OnErrorOpt, Protocol, Target
from medseg.data import catalog as catalog_mod
from medseg.data.convert import folder_to_npz, npz_to_folder
from medseg.data.scan import scan as scan_fn
from medseg.data.splits import cmmc_split, stratified_split
from medseg.data.synthetic import PHANTOMS, generate_dataset
from medseg.errors import InvalidInputError
from medseg.evaluation import write_csv
from medseg.utils.atomic import atomic_write_text
from medseg.utils.checks import check_output_dir, check_output_file, new_output_dir

data_app = typer.Typer(help="Data: scan a folder, convert formats, write split manifests, make phantoms.",
                       no_args_is_help=True)
console = Console(width=None if Console().is_terminal else 120)
err = Console(stderr=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True)


@data_app.command("scan")
def scan_cmd(
    root: Path = typer.Argument(..., help="Data root: <root>/<modality>/<dataset>/{images,masks}/ or *.npz."),
    markdown: Path | None = typer.Option(None, "--markdown", help="Also write the report as Markdown."),
    csv: Path | None = typer.Option(None, "--csv", help="Also write the summary table as CSV."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write summary + problems as JSON."),
    mask_mode: MaskModeOpt = typer.Option(MaskModeOpt.strict, help="How mask values are read."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 if any error was found."),
) -> None:
    """Summarise a data folder (counts, sizes, mask coverage) and list every problem found."""
    for f in (markdown, csv, json_out):
        if f is not None:
            check_output_file(f)
    discovered = catalog_mod.discover(root)
    with _progress() as prog:
        task = prog.add_task("reading", total=len(discovered[0]))
        report = scan_fn(root, mask_mode=mask_mode.value, progress=lambda _e: prog.advance(task),
                         discovered=discovered)
    rows = report.rows()
    table = Table(title=f"medseg data scan {root}")
    for col in (rows[0] if rows else {"modality": ""}):
        table.add_column(col, justify="right" if col not in ("modality", "dataset") else "left")
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    console.print(table)
    errors = report.errors
    console.print(f"{sum(r['files'] for r in rows)} files, {len(errors)} errors, "
                  f"{len(report.problems) - len(errors)} warnings")
    for p in report.problems[:50]:
        console.print(f"  [{'red' if p.severity == 'error' else 'yellow'}]{p.severity}[/] {p.path}: {p.problem}",
                      highlight=False, soft_wrap=True)
    if len(report.problems) > 50:
        console.print(f"  … {len(report.problems) - 50} more (see --markdown/--json)")
    if markdown:
        atomic_write_text(markdown, report.to_markdown())
    if csv:
        write_csv(rows, csv)
    if json_out:
        problems = [{"path": p.path, "problem": p.problem, "severity": p.severity} for p in report.problems]
        payload = {"root": str(root), "groups": [g.numbers() for g in report.groups], "problems": problems}
        atomic_write_text(json_out, json.dumps(payload, indent=2))
    if not rows:
        console.print(f"[red]nothing to scan:[/] no image/mask pairs in {root} (layout: "
                      "<root>/<modality>/<dataset>/images and masks, or <root>/<modality>/<dataset>/*.npz)",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if strict and errors:
        raise typer.Exit(1)


@data_app.command("convert")
def convert_cmd(
    src: Path = typer.Argument(..., help="Catalog root to read."),
    dst: Path = typer.Argument(..., help="Output root."),
    to: Target = typer.Option(..., "--to", help="npz: folders → CVPR24 npz; folder: npz → PNG folders."),
    max_size: int | None = typer.Option(None, "--max-size", min=8, help="Longest side after resizing."),
    on_error: OnErrorOpt = typer.Option(OnErrorOpt.stop, "--on-error",
                                        help="stop at the first unusable input, or skip it and list it at the end."),
) -> None:
    """Convert between image/mask folders and CVPR24 npz files."""
    from medseg.data.modality import canonical_modality

    entries, problems = catalog_mod.discover(src)
    # what discovery already refuses (a duplicate case, a broken link) is not converted either: say so
    skipped: list[tuple[Path, str]] = [(Path(p.path), p.problem) for p in problems if p.severity == "error"]
    if skipped and on_error is OnErrorOpt.stop:
        raise InvalidInputError(skipped[0][0], skipped[0][1] + " (--on-error skip converts the rest)")
    with new_output_dir(dst), _progress() as prog:
        task = prog.add_task(f"→ {to.value}", total=len(entries))
        fn = folder_to_npz if to is Target.npz else npz_to_folder
        written = fn(src, dst, max_size=max_size, progress=lambda _e: prog.advance(task), entries=entries,
                     on_error=on_error.value, skipped=skipped)
    renamed = sorted({(d.name, canonical_modality(d.name)) for d in src.iterdir()
                      if d.is_dir() and not d.name.startswith(".") and canonical_modality(d.name) != d.name})
    for old, new in renamed:
        console.print(f"note: the modality folder {old}/ is written as {new}/ (medseg's canonical name)",
                      highlight=False, soft_wrap=True)
    console.print(f"{len(entries) + sum(p.severity == 'error' for p in problems)} input(s): {len(written)} "
                  f"written under {dst}, {len(skipped)} skipped", highlight=False)
    report_skipped(skipped)
    if skipped:
        raise typer.Exit(EXIT_PARTIAL)


@data_app.command("split")
def split_cmd(
    root: Path = typer.Argument(..., help="Catalog root."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest CSV to write."),
    protocol: Protocol = typer.Option(Protocol.stratified, help="stratified train/val/test, or the CMMC protocol."),
    test: float = typer.Option(0.2, min=0.0, max=0.9, help="Test fraction per (modality, dataset)."),
    val: float = typer.Option(0.0, min=0.0, max=0.9, help="Validation fraction (stratified only)."),
    train_fraction: float = typer.Option(0.1, min=0.0, max=1.0, help="CMMC: training subset fraction."),
    align_test: bool = typer.Option(True, help="CMMC: equal test sizes across modalities."),
    seed: int = typer.Option(2024, help="Random seed."),
    include_unlabeled: bool = typer.Option(False, help="Keep images that have no mask."),
    group_rule: list[str] | None = typer.Option(None, "--group-rule",
                                                help="DATASET=RULE (case, auto, regex:PATTERN, stack:N): cases "
                                                     "of one group never straddle splits (repeatable)."),
) -> None:
    """Write a manifest CSV with a seeded, leak-free split stratified by modality and dataset.

    Each dataset is seeded on its own (adding a dataset changes no other split) and cases sharing a group key
    (CHASE_DB1's two eyes of a child, contiguous slices of a stack) stay on one side."""
    check_output_file(out)
    entries, problems = catalog_mod.discover(root)
    for p in problems:
        err.print(f"[yellow]{p.severity}[/] {p.path}: {p.problem}", highlight=False)
    if not include_unlabeled:
        entries = [e for e in entries if e.mask is not None or e.image.suffix.lower() == ".npz"]
    rules = _parse_rules(group_rule or [])
    try:
        if protocol is Protocol.cmmc:
            split = cmmc_split(entries, test=test, train_fraction=train_fraction, align_test=align_test, seed=seed,
                               group_rules=rules)
        else:
            split = stratified_split(entries, test=test, val=val, seed=seed, group_rules=rules)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    catalog_mod.write_manifest(split, out)
    counts = Counter((e.modality, e.split) for e in split)
    table = Table(title=f"{out}")
    splits = sorted({s for _, s in counts})
    table.add_column("modality")
    for s in splits:
        table.add_column(s, justify="right")
    for mod in sorted({m for m, _ in counts}):
        table.add_row(mod, *(str(counts.get((mod, s), 0)) for s in splits))
    console.print(table)


def _parse_rules(items: list[str]) -> dict[str, str]:
    rules = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"--group-rule {item!r}: expected DATASET=RULE")
        k, v = item.split("=", 1)
        rules[k.strip()] = v.strip()
    return rules


@data_app.command("synth")
def synth_cmd(
    out: Path = typer.Argument(..., help="Output root."),
    per_modality: int = typer.Option(8, min=1, help="Images per modality."),
    size: int = typer.Option(128, min=32, help="Image side."),
    seed: int = typer.Option(0, help="Random seed."),
    modality: list[str] = typer.Option(None, "--modality", help=f"Subset of: {', '.join(PHANTOMS)}."),
) -> None:
    """Generate deterministic synthetic phantoms with masks (tests, demos)."""
    check_output_dir(out)
    unknown = [m for m in modality or [] if m not in PHANTOMS]
    if unknown:
        raise typer.BadParameter(f"no phantom for {', '.join(unknown)}; choose from {', '.join(PHANTOMS)}")
    generate_dataset(out, per_modality=per_modality, size=size, seed=seed, modalities=tuple(modality or ()) or None)
    console.print(f"wrote {per_modality} × {len(modality or PHANTOMS)} phantoms under {out}")
