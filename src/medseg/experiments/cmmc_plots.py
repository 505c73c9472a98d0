"""The CMMC report's figures, from the per-image rows of :func:`medseg.experiments.cmmc_analysis.paired_rows`.

- ``diff_vs_entropy.png``: per modality, the score difference (edge − raw, ×100) against image entropy.
- ``scores_box.png``: per modality, box plots of the per-image score of each model (and of prompt-free LiteMedSAM).
- ``routing_decisions.png``: per modality, the images in the (first, second meta-feature) plane, coloured by the
  model that really scored better and marked by the threshold router's choice, with its threshold drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medseg.experiments.cmmc_analysis import paper_score


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_report(rows: Sequence[Mapping[str, Any]], out: Path, *, routers: Mapping[str, Mapping[str, Any]] | None = None,
                baseline: Sequence[Mapping[str, Any]] | None = None,
                features: Sequence[str] = ("std", "entropy")) -> list[Path]:
    """Write the report's figures into ``out``; returns their paths.

    Args:
        rows: per-image rows (``modality``, ``score_raw``, ``score_edge``, the meta-features).
        out: the report folder.
        routers: modality → threshold-rule dict (``routers.json``'s ``threshold`` entry); ``None``: no routing plot.
        baseline: per-image ``dice`` / ``nsd`` rows of prompt-free LiteMedSAM (``modality`` column), or ``None``.
        features: the meta-features; the routing plot uses the first two (or the first against the score
            difference when there is only one).
    """
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    mods = sorted({str(r["modality"]) for r in rows})
    by = {m: [r for r in rows if r["modality"] == m] for m in mods}
    written = []

    fig, axes = plt.subplots(1, len(mods), figsize=(3.2 * len(mods), 3), squeeze=False)
    for ax, mod in zip(axes[0], mods, strict=True):
        ax.scatter([float(r["entropy"]) for r in by[mod]],
                   [100 * (float(r["score_edge"]) - float(r["score_raw"])) for r in by[mod]], s=8)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(mod)
        ax.set_xlabel("entropy (bits)")
    axes[0][0].set_ylabel("edge − raw score")
    written.append(_save(fig, out / "diff_vs_entropy.png", plt))

    fig, axes = plt.subplots(1, len(mods), figsize=(2.6 * len(mods), 3.2), squeeze=False, sharey=True)
    for ax, mod in zip(axes[0], mods, strict=True):
        data, labels = [], []
        if baseline is not None:
            data.append([100 * paper_score(r["dice"], r["nsd"]) for r in baseline if r["modality"] == mod])
            labels.append("LiteMedSAM")
        data += [[100 * float(r["score_raw"]) for r in by[mod]], [100 * float(r["score_edge"]) for r in by[mod]]]
        labels += ["raw", "edge"]
        ax.boxplot(data)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45)
        ax.set_title(mod)
    axes[0][0].set_ylabel("score = (DSC + NSD) / 2 × 100")
    written.append(_save(fig, out / "scores_box.png", plt))

    if routers is not None:
        written.append(_routing_plot(by, routers, features, out / "routing_decisions.png", plt))
    return written


def _routing_plot(by: Mapping[str, Sequence[Mapping[str, Any]]], routers: Mapping[str, Mapping[str, Any]],
                  features: Sequence[str], path: Path, plt: Any) -> Path:
    from medseg.routing import rule_from_dict

    fx = features[0]
    fy = features[1] if len(features) > 1 else None
    mods = list(by)
    cols = min(4, len(mods))
    rows = -(-len(mods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(mods):]:
        ax.axis("off")
    for ax, mod in zip(axes.flat, mods, strict=False):  # the grid may have empty cells
        rs = by[mod]
        x = [float(r[fx]) for r in rs]
        y = ([float(r[fy]) for r in rs] if fy else
             [100 * (float(r["score_edge"]) - float(r["score_raw"])) for r in rs])
        edge_wins = [float(r["score_edge"]) > float(r["score_raw"]) for r in rs]
        title = mod
        chosen = [False] * len(rs)
        if mod in routers:
            rule = rule_from_dict(routers[mod])
            chosen = list(rule.choose_b({f: [float(r[f]) for r in rs] for f in features}))
            title = f"{mod}\n{rule.describe('raw', 'edge') if hasattr(rule, 'describe') else type(rule).__name__}"
            feature = getattr(rule, "feature", None)
            if feature in (fx, fy):
                line = ax.axvline if feature == fx else ax.axhline
                line(float(rule.threshold), color="black", lw=0.8, ls="--")
        colours = ["tab:orange" if w else "tab:blue" for w in edge_wins]
        for xi, yi, c, b in zip(x, y, colours, chosen, strict=True):
            ax.scatter([xi], [yi], s=18, c=c, marker="^" if b else "o")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(fx)
        ax.set_ylabel(fy or "edge − raw score")
    fig.suptitle("colour: better model (orange edge, blue raw); marker: router's choice (▲ edge, ● raw)",
                 fontsize=8)
    return _save(fig, path, plt)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
