"""Entry point of the ``medseg`` console script."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.console import Console

from medseg import __version__
from medseg.cli import model_cmds
from medseg.cli.data import data_app
from medseg.cli.experiment import experiment_app
from medseg.errors import MedsegError
from medseg.utils.checks import check_output_dir

app = typer.Typer(
    name="medseg",
    help="medseg — universal, prompt-free 2-D medical image segmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")
app.add_typer(model_cmds.export_app, name="export")
app.add_typer(model_cmds.weights_app, name="weights")
app.add_typer(experiment_app, name="experiment")
for _cmd in (model_cmds.models, model_cmds.train, model_cmds.pretrain, model_cmds.predict, model_cmds.evaluate,
             model_cmds.benchmark):
    app.command()(_cmd)
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """medseg command line."""


@app.command()
def demo(
    out: Path = typer.Option(Path("medseg-demo"), "--out", "-o", help="Output folder."),
    per_modality: int = typer.Option(12, min=3, help="Synthetic images per modality (at least 3: one each for "
                                                      "training, validation and test)."),
    size: int = typer.Option(128, min=32, help="Image side in pixels (multiple of 16)."),
    seed: int = typer.Option(0, help="Random seed."),
    steps: int = typer.Option(300, min=1, help="Training steps (300 ≈ 1 min on 2 CPU cores)."),
) -> None:
    """Run the embedded default: synthetic data → train a small U-Net (~1 min) → predict → evaluate → report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medseg.demo import run_demo
    from medseg.evaluation import format_markdown_table

    model_cmds._quiet()
    check_output_dir(out)
    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("train", total=steps)
        result = run_demo(out, per_modality=per_modality, size=size, seed=seed, steps=steps,
                          log=lambda m: err.print(m), progress=lambda k, n: bar.update(task, completed=k))
    typer.echo(format_markdown_table(result.summary, digits=3))


class _NoticeHandler(logging.Handler):
    """medseg's own log lines (``logging.getLogger("medseg…")``, e.g. a one-time engine build) on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"[dim]medseg:[/dim] {record.getMessage()}", highlight=False, soft_wrap=True)


@app.command()
def serve(
    model: str = typer.Option("universal", "--model", "-m", help="Model: universal (the shipped model), a model "
                                                                  "folder, or lite_medsam."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (this machine only by default)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    max_upload_mb: float = typer.Option(50.0, "--max-upload-mb", min=0.001, help="Larger uploads are refused (413)."),
    max_queue: int = typer.Option(64, "--max-queue", min=0, help="Images that may wait for the model (then 503)."),
    max_wait: float = typer.Option(120.0, "--max-wait", min=1.0, help="Seconds an image may wait for the model."),
    fast: bool = typer.Option(False, "--fast", help="The universal model's fast mode (its fast encoder and head)."),
    keep_specialists: bool = typer.Option(False, "--keep-specialists",
                                          help="With --fast: the specialist tasks keep their specialist."),
) -> None:
    """Segment in the browser: open the printed address, drop images, correct with a box, download (needs the
    serve extra: pip install 'medseg[serve]')."""
    from medseg.utils.checks import check_device

    check_device(device)
    try:
        from medseg.serve import serve as run_server
    except ImportError as exc:
        raise MedsegError(f"medseg serve needs the serve extra ({exc.name} is missing): "
                          "pip install 'medseg[serve]'") from exc
    run_server(model, host=host, port=port, device=device, max_upload_mb=max_upload_mb, max_queue=max_queue,
               max_wait_s=max_wait, fast=fast, keep_specialists=keep_specialists,
               say=lambda m: err.print(m, highlight=False, soft_wrap=True))


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: object = None, line: str | None = None) -> None:
    """Warnings in one line on stderr (``warning: <file>: <what>`` for an input's), not Python's two-line form."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    err.print(f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; medseg errors print one line (file and problem) and exit with code 2; warnings print one line."""
    import logging
    import warnings

    shown, warnings.showwarning = warnings.showwarning, _one_line_warning  # type: ignore[assignment]
    notices = _NoticeHandler()
    medseg_log = logging.getLogger("medseg")
    level = medseg_log.level
    medseg_log.addHandler(notices)
    medseg_log.setLevel(logging.INFO)
    try:
        return _run(argv)
    finally:
        warnings.showwarning = shown
        medseg_log.removeHandler(notices)
        medseg_log.setLevel(level)


def _run(argv: list[str] | None) -> int:
    try:
        rv = app(args=argv, prog_name="medseg", standalone_mode=False)
    except MedsegError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except OSError as exc:  # a disk full, a file vanishing mid-run …: still one line naming the file
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        err.print(f"[red]error:[/red] {where}{exc.strerror or exc}", highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        return 130
    except Exception as exc:
        # usage errors (click/typer ClickException: bad option, missing argument) print their own message
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            return exc.exit_code
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
