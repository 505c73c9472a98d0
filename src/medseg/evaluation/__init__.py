"""Reports: tables (CSV + Markdown) and pictures (mask overlays)."""

from medseg.evaluation.overlay import overlay_contours, save_overlay_grid
from medseg.evaluation.tables import format_markdown_table, write_csv, write_markdown_table

__all__ = ["format_markdown_table", "overlay_contours", "save_overlay_grid", "write_csv", "write_markdown_table"]
