"""The ``medseg`` command line (Typer): ``medseg data scan|convert|split|synth``, ``medseg demo``."""

from medseg.cli.main import app, main

__all__ = ["app", "main"]
