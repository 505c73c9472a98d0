"""``medseg models | train | predict | evaluate | benchmark | export``."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medseg.cli.options import EngineOpt, MaskModeOpt, MissingOpt, NsdModeOpt, OnErrorOpt, RoutingOpt
from medseg.errors import InvalidInputError
from medseg.utils.checks import check_device, check_output_dir, check_output_file, new_output_dir

err = Console(stderr=True)


def report_skipped(skipped: list[tuple[Path, str]]) -> None:
    """Print the inputs an ``--on-error skip`` run passed over (one line each)."""
    if skipped:
        err.print(f"[yellow]skipped {len(skipped)} unusable file(s):[/yellow]", highlight=False)
        for path, problem in skipped:
            err.print(f"  {path}: {problem}", highlight=False, soft_wrap=True)


def _not_inputs_line(files: list[Path]) -> str | None:
    """The summary's word on files of the input folders that are not inputs (catalogue masks, hidden files)."""
    if not files:
        return None
    hidden = sum(any(part.startswith(".") for part in f.parts) for f in files)
    parts = [f"{len(files) - hidden} files in catalogue mask folders (masks/, labels/, gts/ beside images/) are "
             "masks, not inputs" if len(files) > hidden else "", f"{hidden} hidden files" if hidden else ""]
    return "; ".join(p for p in parts if p)


def close_batch(*, found: int, written: int, out: Path, skipped: list[tuple[Path, str]],
                not_inputs: str | None = None) -> None:
    """The closing summary of a batch command — inputs found, written, skipped (each named with its reason) — and
    its exit code: 0 when every input was written, :data:`EXIT_PARTIAL` when some were not (``--on-error skip``).
    Errors that stop a command exit with 2 (``medseg.cli.main``)."""
    typer.echo(f"{found} input(s): {written} written → {out}, {len(skipped)} skipped")
    if not_inputs:
        typer.echo(f"not segmented: {not_inputs}")
    report_skipped(skipped)
    if skipped:
        raise typer.Exit(EXIT_PARTIAL)


#: exit code of a batch command that produced some but not all of what was asked (the skipped inputs are listed)
EXIT_PARTIAL = 1


export_app = typer.Typer(help="Export a model to a deployment format.", no_args_is_help=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=False)


def _quiet() -> None:
    """Keep the terminal for medseg's own progress: library info logs and known deprecation chatter off."""
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero", "torch.onnx", "onnxscript"):
        logging.getLogger(name).setLevel(logging.WARNING)


def models() -> None:
    """List the registered models."""
    from medseg.models import list_models

    for m in list_models():
        typer.echo(f"{m.name:14s} {m.description}")


def _fit_command(config: Path | None, overrides: list[str], resume: bool, objective: str | None = None) -> None:
    """``medseg train`` / ``pretrain``: a config (or, when the first argument is an override, none), its objective's
    trainer, and one line with the model folder, the steps and the last losses and validation metrics."""
    from medseg.training.run import fit, load_run_config

    if config is not None and "=" in str(config) and not config.exists():
        overrides = [str(config), *overrides]
        config = None
    _quiet()
    cfg = load_run_config(config, [*([f"objective={objective}"] if objective else []), *overrides])
    result = fit(cfg, resume=resume)
    if result.model_dir is not None:
        shown = {k: round(v, 4) for k, v in sorted(result.metrics.items()) if k.startswith(("val/", "train/loss"))}
        typer.echo(f"model: {result.model_dir}  steps: {result.global_step}  {shown}")


def train(
    config: Path | None = typer.Argument(None, help="YAML config (see configs/); omitted = defaults."),
    overrides: list[str] | None = typer.Argument(None, help="Dotted overrides, e.g. trainer.max_steps=100."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT_DIR/checkpoints/last.ckpt if present."),
) -> None:
    """Train a model (CPU, GPU, multi-GPU / multi-node DDP through Lightning) with the config's ``objective``:
    segmentation (default), ssl (encoder pre-training, as ``medseg pretrain``) or distill (encoder distillation)."""
    _fit_command(config, list(overrides or []), resume)


def pretrain(
    config: Path | None = typer.Argument(None, help="YAML config (an SslConfig); omitted = defaults."),
    overrides: list[str] | None = typer.Argument(None, help="Dotted overrides, e.g. method=byol model.name=vit_unet."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT_DIR/checkpoints/last.ckpt if present."),
) -> None:
    """Self-supervised pre-training of a U-Net's encoder (SimSiam, BYOL, DINO) on the images of a data set; the
    saved model fine-tunes with ``model.init_mode=encoder``."""
    _fit_command(config, list(overrides or []), resume, objective="ssl")


def predict(
    model: str = typer.Argument(..., help="Model folder (from `medseg train`), `lite_medsam`, or a CMMC router file "
                                          "(`<experiment>/report/routers.json`: each image goes to the raw- or the "
                                          "edge-pre-trained model by its meta-features; needs --modality)."),
    inputs: list[Path] = typer.Argument(..., help="Image/volume files or folders (PNG, TIFF, DICOM, NIfTI, npz…)."),
    out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Output folder."),
    prompt_masks: Path | None = typer.Option(None, "--box-from-masks",
                                             help="Folder of masks named like the inputs: SAM-family models get one "
                                                  "box per mask component (box-prompted mode)."),
    batch_size: int = typer.Option(8, min=1, help="Slices per forward pass."),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0, help="Probability threshold, in [0, 1]."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    engine: EngineOpt = typer.Option(EngineOpt.auto, "--engine",
                                     help="How the model runs: auto (onnx when ONNX Runtime is installed, else "
                                          "optimized), optimized (BN folded, channels-last), eager, compile, onnx "
                                          "(ONNX Runtime; exported once, cached) or onnx-int8 (dynamic int8)."),
    on_error: OnErrorOpt = typer.Option(OnErrorOpt.stop, "--on-error",
                                        help="stop at the first unusable input, or skip it and list it at the end."),
    dicom_window: str = typer.Option("header", "--dicom-window",
                                     help="DICOM inputs: header (the file's window), none, or CENTER,WIDTH."),
    tile: int | None = typer.Option(None, "--tile", min=0,
                                    help="Segment at native resolution with TILE×TILE sliding windows (SAM-family "
                                         "models: their input size, 256); 0 = letterbox. Default: the model's own "
                                         "(patch-trained models tile, the others letterbox)."),
    overlap: float | None = typer.Option(None, "--overlap", min=0.0, max=0.95,
                                         help="Sliding-window overlap (default: the model's, else 0.25)."),
    tta: bool | None = typer.Option(None, "--tta/--no-tta", help="Average the logits of the four flips (default: "
                                                                 "the model's model.json tta, else no; universal: "
                                                                 "its specialists')."),
    target: str | None = typer.Option(None, "--target",
                                      help="Models with one output per target (universal models): which one."),
    modality: str | None = typer.Option(None, "--modality", help="With a router file: whose routing rule to use."),
    task_name: str | None = typer.Option(None, "--task",
                                         help="Task models (ESP-MedSAM): segment every image as this task instead "
                                              "of the one the model's classifier picks."),
    subset: str | None = typer.Option(None, "--subset", help="With a router file: whose fine-tuned models to use "
                                                             "(default: the modality; e.g. a target of it)."),
    router: str = typer.Option("threshold", "--router",
                               help="With a router file: threshold (the paper's), logistic or tree."),
    fast: bool = typer.Option(False, "--fast", help="The universal model: its fast encoder (LiteMedSAM at a "
                                                    "quarter of the work, or a distilled student) and its head for "
                                                    "every task, no specialist."),
    keep_specialists: bool = typer.Option(False, "--keep-specialists",
                                          help="With --fast: the tasks run by a native-resolution specialist keep "
                                               "it (slower on those tasks, far better on thin structures)."),
    min_confidence: float | None = typer.Option(None, "--min-confidence", min=0.0, max=1.0,
                                                help="The universal model: images whose task probability is below "
                                                     "this are listed as unsure (default: the model's, 0.5)."),
    routing: RoutingOpt | None = typer.Option(None, "--routing",
                                              help="The universal model: image (each image's own most probable "
                                                   "task), batch (the inputs share a task prior, estimated from "
                                                   "all of them: best for a folder of one dataset) or auto (they "
                                                   "share it only if one task holds half of it or more; a folder "
                                                   "mixing datasets goes image by image). batch and auto make two "
                                                   "passes. Default: auto (image with --fast)."),
) -> None:
    """Segment files; writes masks in the input's format plus PNG overlays."""
    from medseg.data.loading import case_key
    from medseg.data.readers.base import parse_dicom_window
    from medseg.inference.files import collect_inputs, masks_by_case, output_names, predict_files
    from medseg.models.io import load_model

    window = parse_dicom_window(dicom_window)
    check_device(device)
    if prompt_masks is not None and not prompt_masks.is_dir():
        raise InvalidInputError(prompt_masks, "--box-from-masks: no such folder")
    not_inputs: list[Path] = []
    files = collect_inputs(inputs, not_inputs)
    output_names(files)  # a clash of output names is an error before any work
    routed = model.endswith(".json") and Path(model).is_file()
    if routed:
        from medseg.routing import RoutedPredictor, load_router

        if modality is None:
            raise InvalidInputError(model, "a router file needs --modality (its rules are per modality)")
        rule, folders, features = load_router(model, modality=modality, subset=subset, router=router)
        sides = {k: (v, load_model(v, device=device)) for k, v in folders.items()}
        loaded = sides["a"][1]
    else:
        loaded = load_model(model, device=device)
    if not files:
        raise InvalidInputError(inputs[0], "no supported image files found" + (
            f" (only {len(not_inputs)} catalogue masks or hidden files)" if not_inputs else ""))
    prompts = None
    if prompt_masks is not None:
        by_case = masks_by_case(prompt_masks)
        prompts = {f: by_case[case_key(f)] for f, _ in files if case_key(f) in by_case}
        without = [f for f, _ in files if f not in prompts]
        if without:
            err.print(f"[yellow]warning:[/yellow] {len(without)} of {len(files)} inputs have no mask in "
                      f"{prompt_masks} and run prompt-free: {', '.join(str(f) for f in without[:5])}"
                      f"{' …' if len(without) > 5 else ''}", highlight=False, soft_wrap=True)
    if prompts and (tile if tile is not None else loaded.tile):
        raise InvalidInputError(prompt_masks, "--box-from-masks cannot be combined with tiling (box prompts are "
                                              "not tiled): add --tile 0")
    opts = dict(device=device, threshold=threshold, batch_size=batch_size, engine=engine.value, tile=tile,
                overlap=overlap, tta=tta, target=target, task=task_name, min_confidence=min_confidence, fast=fast,
                keep_specialists=keep_specialists, routing=None if routing is None else routing.value)
    if routed:
        predictor = RoutedPredictor(rule, *(_predictor(spec, m, **opts) for spec, m in (sides["a"], sides["b"])),
                                    features)
    else:
        predictor = _predictor(model, loaded, **opts)
    skipped: list[tuple[Path, str]] = []
    with new_output_dir(out), _progress() as bar:  # the folder appears only now, and goes if nothing was written
        passes = 2 if getattr(predictor, "batch_routed", False) else 1  # batch routing: classify, segment
        task = bar.add_task("predict", total=len(files) * passes)
        results = predict_files(predictor, files, out, prompt_masks=prompts,
                                progress=lambda k: bar.advance(task, k), on_error=on_error.value, skipped=skipped,
                                dicom_window=window)
    for r in results:
        if r.note:
            err.print(f"[yellow]warning:[/yellow] {r.image}: {r.note}", highlight=False, soft_wrap=True)
    _write_tasks(results, out)
    if routed:
        typer.echo(f"routed ({router}, {modality}): {predictor.counts['a']} images → {folders['a']}, "
                   f"{predictor.counts['b']} → {folders['b']}")
    close_batch(found=len(files), written=len(results), out=out, skipped=skipped,
                not_inputs=_not_inputs_line(not_inputs))


def _write_tasks(results: list, out: Path) -> None:
    """A task model's routing: ``out/tasks.csv`` (each image's task; for ``universal`` also its probability, the
    engine and whether the classifier was sure), the count per task, and a warning naming the unsure images. Nothing
    for a model without tasks."""
    if not any(r.task is not None for r in results):
        return
    from medseg.evaluation import write_csv

    universal = any(r.engine is not None for r in results)
    write_csv([{"image": str(r.image), "mask": str(r.mask), "task": r.task,
                **({"probability": round(r.task_probability, 4) if r.task_probability is not None else "",
                    "engine": r.engine, "confident": r.confident} if universal else {})} for r in results],
              out / "tasks.csv")
    counts = {t: sum(r.task == t for r in results) for t in sorted({str(r.task) for r in results})}
    typer.echo("segmented as: " + ", ".join(f"{t} {n}" for t, n in counts.items()) + f" ({out / 'tasks.csv'})")
    unsure = [r for r in results if not r.confident]
    if unsure:
        err.print(f"[yellow]warning:[/yellow] the classifier was unsure (probability below the minimum "
                  f"confidence) of {len(unsure)} image(s); each was segmented as its most probable task, check "
                  "them: " + ", ".join(f"{r.image} ({r.task} {r.task_probability:.2f})" for r in unsure[:10])
                  + (" …" if len(unsure) > 10 else ""), highlight=False, soft_wrap=True)


def _predictor(spec: str, loaded, *, device: str, threshold: float = 0.5, batch_size: int = 8,
               engine: str = "optimized", tile: int | None = None, overlap: float | None = None,
               tta: bool | None = None,
               target: str | None = None, task: str | None = None, min_confidence: float | None = None,
               fast: bool = False, keep_specialists: bool = False, routing: str | None = None):
    """The :class:`Predictor` of a loaded model with the CLI's defaults: the model's own tile/overlap unless given
    (``tile=0``: letterbox); the :class:`UniversalPredictor` of the ``universal`` model."""
    from medseg.inference import Predictor

    if loaded.name == "universal":
        from medseg.inference.universal import UniversalPredictor, default_routing, routing_temperature_of

        unused = [n for n, v in (("--tile", tile), ("--overlap", overlap), ("--target", target)) if v is not None]
        if unused:
            raise InvalidInputError(spec, f"the universal model picks each task's engine itself; "
                                          f"{', '.join(unused)} do not apply")
        try:
            return UniversalPredictor(loaded.model, device=device, threshold=threshold, batch_size=batch_size,
                                      engine=engine, task=task, fast=fast, keep_specialists=keep_specialists,
                                      min_confidence=(loaded.meta.get("min_confidence", 0.5) if min_confidence is None
                                                      else min_confidence),
                                      routing=routing or default_routing(fast),
                                      routing_temperature=routing_temperature_of(loaded.meta, fast),
                                      specialist_tta=tta)
        except ValueError as exc:
            raise InvalidInputError(spec, str(exc)) from exc
    if min_confidence is not None or fast or keep_specialists or routing is not None:
        flag = ("--fast" if fast else "--keep-specialists" if keep_specialists else "--routing" if routing is not None
                else "--min-confidence")
        raise InvalidInputError(spec, f"{flag} applies to the universal model only")

    given = {**({} if tile is None else {"tile": tile or None}), **({} if overlap is None else {"overlap": overlap}),
             **({} if tta is None else {"tta": tta})}
    try:
        return Predictor.for_model(loaded, device=device, threshold=threshold, batch_size=batch_size, engine=engine,
                                   channel=loaded.channel(target), task=task, **given)
    except ValueError as exc:
        raise InvalidInputError(spec, str(exc)) from exc


def evaluate(
    pred: Path = typer.Argument(..., help="Predicted mask file or folder (with --model: the images to segment)."),
    gt: Path = typer.Argument(..., help="Ground-truth mask file, folder, or catalog tree."),
    out: Path = typer.Option(Path("evaluation"), "--out", "-o", help="Output folder."),
    tolerance: float = typer.Option(2.0, help="NSD tolerance (physical units; pixels at unit spacing)."),
    modality: str | None = typer.Option(None, help="Label every row with this modality."),
    dataset: str | None = typer.Option(None, help="Label every row with this dataset."),
    mask_mode: MaskModeOpt = typer.Option(MaskModeOpt.strict, "--mask-mode",
                                          help="strict: masks must be binary; nonzero: any non-zero value is "
                                               "foreground; labels: label maps scored per label (CVPR24)."),
    missing: MissingOpt = typer.Option(MissingOpt.error, "--missing",
                                       help="A ground-truth case without a prediction: error, score it as an "
                                            "empty prediction, or skip it (listed in summary.md)."),
    nsd_mode: NsdModeOpt | None = typer.Option(None, "--nsd-mode",
                                               help="boundary (pixels, default), subpixel (contour-length "
                                                    "weighted) or cvpr24 (the challenge's)."),
    leaderboard: bool = typer.Option(False, "--leaderboard",
                                     help="CVPR24 rules: the challenge's NSD, NSD = 0 where Dice ≤ 0.2."),
    model: str | None = typer.Option(None, "--model",
                                     help="Segment the images given as PRED with this model first (predictions go "
                                          "to OUT/predictions), then score them."),
    engine: EngineOpt = typer.Option(EngineOpt.auto, "--engine", help="With --model: how the model runs."),
    tile: int | None = typer.Option(None, "--tile", min=0, help="With --model: sliding-window tile (0 = letterbox; "
                                                                "default: the model's)."),
    overlap: float | None = typer.Option(None, "--overlap", min=0.0, max=0.95, help="With --model: window overlap."),
    tta: bool | None = typer.Option(None, "--tta/--no-tta", help="With --model: average the logits of the four "
                                                                 "flips (default: the model's)."),
    target: str | None = typer.Option(None, "--target", help="With --model: output of a multi-target model."),
    device: str = typer.Option("cpu", help="With --model: torch device."),
    on_error: OnErrorOpt = typer.Option(OnErrorOpt.stop, "--on-error",
                                        help="stop at the first unusable file, or skip it (listed in the summary, "
                                             "exit code 1)."),
    routing: RoutingOpt | None = typer.Option(None, "--routing",
                                              help="With --model universal: image, batch or auto routing (as "
                                                   "medseg predict; default auto)."),
) -> None:
    """Per-image Dice, IoU, NSD, HD95 (CSV), per-modality/dataset summary (Markdown) and box plots.

    With ``--model``, PRED is the images: they are segmented first (same options as ``medseg predict``)."""
    from medseg.evaluation.compare import SUMMARY_COLUMNS, evaluate_folders
    from medseg.evaluation.tables import format_markdown_table
    from medseg.metrics import MetricConfig

    predictor, files = None, []
    not_segmented: list[tuple[Path, str]] = []
    predicted = None
    if model is not None:
        from medseg.inference.files import collect_inputs, output_names, predict_files
        from medseg.models.io import load_model

        check_device(device)
        files = collect_inputs([pred])
        if not files:
            raise InvalidInputError(pred, "no supported image files found")
        output_names(files)
        predictor = _predictor(model, load_model(model, device=device), device=device, engine=engine.value,
                               tile=tile, overlap=overlap, tta=tta, target=target,
                               routing=None if routing is None else routing.value)
    cfg = MetricConfig(tolerance=tolerance, leaderboard=leaderboard, nsd_mode=nsd_mode.value if nsd_mode else None)
    with new_output_dir(out):  # created once the inputs are valid; removed again if nothing was written
        if predictor is not None:
            with _progress() as bar:
                passes = 2 if getattr(predictor, "batch_routed", False) else 1  # batch routing: classify, segment
                task = bar.add_task("predict", total=len(files) * passes)
                written = predict_files(predictor, files, out / "predictions", keep_masks=True,
                                        progress=lambda k: bar.advance(task, k), on_error=on_error.value,
                                        skipped=not_segmented)
            predicted = {r.image: r.masks for r in written}  # scored as predicted, not read back from the files
            _write_tasks(written, out / "predictions")
        with _progress() as bar:
            task = bar.add_task("evaluate", total=None)
            res = evaluate_folders(pred, gt, out, config=cfg, modality=modality, dataset=dataset,
                                   mask_mode=mask_mode.value, missing=missing.value,
                                   progress=lambda k: bar.advance(task, k), on_error=on_error.value,
                                   predicted=predicted)
    typer.echo(format_markdown_table(res.summary, digits=3, columns=SUMMARY_COLUMNS))
    how = "" if not res.missing else " (scored empty)" if missing.value == "empty" else " (skipped)"
    typer.echo(f"paired {res.matched}, missing {len(res.missing)}{how}, extra {len(res.unmatched)}")
    if res.missing and missing.value == "skip":
        err.print(f"{len(res.missing)} ground-truth cases had no prediction and were skipped, e.g. {res.missing[0]}")
    if res.unmatched:
        err.print(f"{len(res.unmatched)} predictions had no ground truth, e.g. {res.unmatched[0]}")
    typer.echo(f"→ {res.csv}, {res.markdown}, {res.plot}")
    skipped = not_segmented + [(Path(f), why) for f, why in res.failed]
    report_skipped(skipped)
    if skipped:
        raise typer.Exit(EXIT_PARTIAL)


def benchmark(
    model: str = typer.Argument(..., help="Registered model name, model folder, or `lite_medsam`."),
    batch_sizes: list[int] = typer.Option([1, 8], "--batch-size", "-b", help="Batch sizes (repeatable)."),
    img_size: int = typer.Option(256, help="Input side (registered names only; folders use their own)."),
    repeats: int = typer.Option(10, min=1),
    warmup: int = typer.Option(2, min=0),
    device: str = typer.Option("cpu"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write CSV + Markdown here."),
) -> None:
    """Params, FLOPs, latency (median, p90), images/s and peak memory."""
    from medseg.evaluation import format_markdown_table, write_csv, write_markdown_table
    from medseg.evaluation.efficiency import benchmark_model

    check_device(device)
    if out is not None:
        check_output_dir(out)
    net, size = _model_for_tools(model, img_size)
    rows = benchmark_model(net, img_size=size, batch_sizes=batch_sizes, repeats=repeats, warmup=warmup,
                           device=device)
    rows = [{"model": model, **r} for r in rows]
    typer.echo(format_markdown_table(rows, digits=2))
    if out is not None:
        write_csv(rows, out / "benchmark.csv")
        write_markdown_table(rows, out / "benchmark.md", title=f"medseg benchmark {model}")


def _model_for_tools(model: str, img_size: int):
    from medseg.models import build_model, sized_options
    from medseg.models.io import load_model
    from medseg.models.registry import list_models

    if Path(model).exists() or model == "lite_medsam":
        loaded = load_model(model)
        return loaded.model, loaded.img_size
    if model in {m.name for m in list_models()}:
        return build_model(model, **sized_options(model, img_size)), img_size
    raise InvalidInputError(model, "not a model folder and not a registered model name")


@export_app.command("onnx")
def export_onnx_cmd(
    model: str = typer.Argument(..., help="Model folder, `lite_medsam`, or a registered name (random weights)."),
    out: Path = typer.Option(Path("model.onnx"), "--out", "-o"),
    img_size: int = typer.Option(256),
    opset: int = typer.Option(18),
) -> None:
    """Export to ONNX and check ONNX Runtime's output against PyTorch."""
    from medseg.export import export_onnx

    _quiet()
    check_output_file(out)
    net, size = _model_for_tools(model, img_size)
    res = export_onnx(net, out, img_size=size, opset=opset)
    typer.echo(f"{res.path}: ONNX Runtime matches PyTorch (max |Δlogit| = {res.max_abs_diff:.2e}, batch {res.batch})")


weights_app = typer.Typer(help="Pretrained weights: list the registered ones, import your own checkpoint.",
                          no_args_is_help=True)


@weights_app.command("list")
def weights_list() -> None:
    """Registered weights, where they come from and their sha256."""
    from medseg.weights import SHIPPED_MODELS, list_weights

    for w in list_weights():
        typer.echo(f"{w.name:14s} {w.package}=={w.version}:{w.member}  sha256 {w.sha256}  ({w.license})")
    for name, digest in sorted(SHIPPED_MODELS.items()):
        typer.echo(f"{name:14s} shipped with medseg (medseg/assets/{name}/)  model.json sha256 {digest}  "
                   "(trained by medseg; see MODEL_CARD.md)")


@weights_app.command("import")
def weights_import(
    checkpoint: Path = typer.Argument(..., help="A .pth (loaded weights-only) or .safetensors checkpoint."),
    sha256: str = typer.Option(..., "--sha256", help="The sha256 you expect of the file (`sha256sum FILE`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (safetensors + JSON with sha256)."),
    model: str = typer.Option("lite_medsam", help="Registered architecture the weights belong to."),
) -> None:
    """Turn your own checkpoint (e.g. fine-tuned LiteMedSAM) into a hash-checked model folder that every command
    loads. The file is verified against --sha256 before it is read; loading never unpickles code."""
    from medseg.models import build_model, load_state_strict
    from medseg.models.io import save_model_folder
    from medseg.weights import load_verified

    state = load_verified(checkpoint, None, sha256=sha256)  # before the output folder exists
    net = build_model(model)
    load_state_strict(net, state, str(checkpoint))
    size = int(getattr(net, "img_size", 256))
    with new_output_dir(out):
        save_model_folder(net, out, name=model, options={}, img_size=size,
                          extra={"imported_from": str(checkpoint), "source_sha256": sha256.lower()})
    typer.echo(f"{checkpoint} (sha256 verified) → {out}")
