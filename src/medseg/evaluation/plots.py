"""Box plots of per-image metrics (matplotlib, headless)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.utils.atomic import atomic_path


def save_boxplots(rows: Sequence[dict[str, Any]], path: str | Path, *, metrics: Sequence[str] = ("dice", "nsd"),
                  by: str = "modality") -> Path:
    """One panel per metric, one box per ``by`` group (with the image count in the label); written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[str(r.get(by, ""))].append(r)
    names = sorted(groups)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        data = [[float(r[m]) for r in groups[g] if m in r] for g in names]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), [f"{g}\n(n={len(d)})" for g, d in zip(names, data, strict=True)],
                      fontsize=8)
        ax.set_title(m.upper() if len(m) <= 4 else m)
        if m in ("dice", "iou", "nsd", "precision", "recall"):
            ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
