"""``medseg experiment``: the method experiments, one command each, every stage cached and resumable."""

from __future__ import annotations

from pathlib import Path

import typer

experiment_app = typer.Typer(help="Run a method's experiment end to end (stages cached; a killed run resumes).",
                             no_args_is_help=True)


@experiment_app.command("cmmc")
def cmmc(
    config: Path = typer.Argument(..., help="Experiment YAML (configs/cmmc-cpu.yaml, configs/cmmc-paper.yaml)."),
    overrides: list[str] = typer.Argument(None, help="key.path=value overrides, e.g. out_dir=runs/x."),
) -> None:
    """Edge-enhanced pre-training + meta-routing (CMMC): distil → pre-train raw/edge → fine-tune → score → report."""
    from medseg.experiments.cmmc import CmmcExperiment, load_cmmc_config
    from medseg.utils.checks import check_accelerator, check_output_dir

    cfg = load_cmmc_config(config, overrides or [])
    check_accelerator(cfg.trainer.accelerator)  # before the split or any other work
    check_output_dir(cfg.out_dir)
    report = CmmcExperiment(cfg, progress=lambda m: typer.echo(f"[cmmc] {m}")).run()
    typer.echo(f"report → {report}")


@experiment_app.command("esp-medsam")
def esp_medsam(
    config: Path = typer.Argument(..., help="Experiment YAML (configs/esp-cpu.yaml)."),
    overrides: list[str] = typer.Argument(None, help="key.path=value overrides, e.g. out_dir=runs/x."),
) -> None:
    """ESP-MedSAM: adapt the teacher → MMDKD → train (bags, SPPG, QDMD, task classifier) → score → report."""
    from medseg.experiments.esp import EspExperiment, load_esp_config
    from medseg.utils.checks import check_accelerator, check_output_dir

    cfg = load_esp_config(config, overrides or [])
    check_accelerator(cfg.trainer.accelerator)  # before the split or any other work
    check_output_dir(cfg.out_dir)
    report = EspExperiment(cfg, progress=lambda m: typer.echo(f"[esp-medsam] {m}")).run()
    typer.echo(f"report → {report}")


@experiment_app.command("medsass")
def medsass(
    config: Path = typer.Argument(..., help="Experiment YAML (configs/medsass-cpu.yaml, configs/medsass-paper.yaml)."),
    overrides: list[str] = typer.Argument(None, help="key.path=value overrides, e.g. out_dir=runs/x."),
) -> None:
    """MedSASS: Otsu pseudo-masks → pre-train (MedSASS end-to-end; SimSiam, BYOL, DINO) → fine-tune with 1/10/100 %
    of the labels, several seeds → score → report."""
    from medseg.experiments.medsass import MedsassExperiment, load_medsass_config
    from medseg.utils.checks import check_accelerator, check_output_dir

    cfg = load_medsass_config(config, overrides or [])
    check_accelerator(cfg.trainer.accelerator)  # before the split or any other work
    check_output_dir(cfg.out_dir)
    report = MedsassExperiment(cfg, progress=lambda m: typer.echo(f"[medsass] {m}")).run()
    typer.echo(f"report → {report}")


@experiment_app.command("universal")
def universal(
    config: Path = typer.Argument(..., help="Experiment YAML (configs/universal-cpu.yaml, "
                                            "configs/universal-gpu.yaml)."),
    overrides: list[str] = typer.Argument(None, help="key.path=value overrides, e.g. out_dir=runs/x."),
) -> None:
    """The universal prompt-free model: embedding cache → prompt-free head → specialists → engine per task chosen on
    validation → model folder → test scores → report."""
    from medseg.experiments.universal import UniversalExperiment, load_universal_config
    from medseg.utils.checks import check_accelerator, check_output_dir

    cfg = load_universal_config(config, overrides or [])
    check_accelerator(cfg.trainer.accelerator)  # before the split or any other work
    check_output_dir(cfg.out_dir)
    report = UniversalExperiment(cfg, progress=lambda m: typer.echo(f"[universal] {m}")).run()
    typer.echo(f"report → {report}")
