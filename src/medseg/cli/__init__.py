"""The ``medseg`` command line (Typer), :mod:`medseg.cli.main`: ``medseg data|train|predict|evaluate|…``.

Nothing is imported here, so ``python -m medseg.cli.main`` runs without runpy's "found in sys.modules" warning;
``python -m medseg`` is the short form.
"""
