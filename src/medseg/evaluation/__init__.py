"""Reports: tables (CSV + Markdown), pictures (mask overlays, box plots) and prediction-vs-truth evaluation."""

from medseg.evaluation.overlay import save_overlay_grid
from medseg.evaluation.plots import save_boxplots
from medseg.evaluation.score import score_entries, score_masks
from medseg.evaluation.tables import format_markdown_table, write_csv, write_markdown_table

__all__ = ["format_markdown_table", "save_boxplots", "save_overlay_grid", "score_entries", "score_masks", "write_csv",
           "write_markdown_table"]
