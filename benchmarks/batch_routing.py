"""Batch routing: does re-estimating the task prior of the images segmented together route unseen datasets better?

``medseg predict universal FOLDER`` names each image's task with a classifier fitted class-balanced, so every task is
a priori equally likely. A folder usually holds one dataset. :func:`medseg.routing.label_shift.adapt_prior` (EM of
Saerens et al. 2002) estimates the batch's task prior and adjusts every image's posterior to it, so an image the
classifier finds ambiguous leans towards the tasks the rest of the batch shows.

EM needs calibrated posteriors, and the classifier (fitted with label smoothing) is under-confident: in the first run
at the fast encoder's 128² embeddings, EM on the raw posteriors routed every held-out one-dataset batch right
(0.899 → 1.000) but, in batches mixing many datasets, let the dominant task outvote other datasets' images (in-domain
0.99 → 0.91). So the posteriors are tempered first (:func:`medseg.routing.label_shift.fit_temperature`): for each
fold and seed, the temperature minimising the negative log-likelihood of the fold's held-out images under the
classifier fitted without them. Each fold is scored with the other fold's temperatures (mean over its seeds: no
image calibrates its own routing), the in-domain scenarios with the median over all fits, which is also the
temperature the recipe ships (``routing_temperature``).

Measured without any test image, on the leave-datasets-out folds of ``lodo_routing.py`` (the classifier refitted as
the recipe does, label smoothing included, without the fold's datasets; seeds 0–2), per-image argmax against the
adjusted posteriors' argmax:

- ``held-out, one dataset``: each held-out dataset's training + validation images as one batch, and in random
  batches of ``--batch-sizes`` (the images shuffled with the seed, then cut).
- ``held-out + in-domain, mixed``: the fold's held-out images together with every other dataset's validation images
  in one batch (a folder of many datasets); accuracy on each group.
- ``in-domain``: the classifier fitted on every training dataset routes the validation images: each dataset as one
  batch, all of them as one mixed batch, and mixed random batches of ``--batch-sizes``.

Rule, fixed before the 256² run (``--encoder main``; it was written before the 128² run too, which only added the
temperature): batch routing becomes the default of ``medseg predict universal`` if, at the main encoder (means over
seeds), (1) the held-out one-dataset full-batch accuracy (mean over the four held-out datasets) rises, (2) the
held-out accuracy in the mixed batch does not fall, and (3) no in-domain accuracy falls (one-dataset batches, the
mixed batch, the mixed small batches). Otherwise it stays an option.

``--gate S`` measures ``auto`` routing instead (:func:`medseg.routing.label_shift.gated_prior`): EM as above, but
the batch's prior is used only if one task holds at least ``S`` of it, else each image keeps its own most probable
task. The batch rule failed only on its third check, by one in-domain image of a folder mixing many datasets; a
mixed folder has no majority task, so the gate should leave its images alone while a folder of one dataset still
shares its prior. Rule, fixed before any ``--gate`` run: ``S = 0.5`` (a majority task), the same three checks at
the main encoder; if all hold, ``auto`` becomes the default of ``medseg predict universal``. The 128² run is
reported beside it and decides nothing.

    OUT=benchmarks/results/universal-cpu/auto-routing
    python benchmarks/batch_routing.py --encoder fast --gate 0.5 --out $OUT
    python benchmarks/batch_routing.py --encoder main --gate 0.5 --test --out $OUT

``--test`` (after the rule decided) routes test images with the fitted temperature and puts committed per-image
Dice on the routes (as ``lodo_routing.py --test``: an image routed to its true task scores its engine's Dice with the
task given, one routed as the scored run routed it keeps that Dice, any other counts 0, a lower bound):

- the held-out pair: the first fold's classifier (the recipe's seed) routes PH2's and CHASE_DB1's test images, each
  dataset as one batch and the whole test split (340 images, 13 datasets) as one mixed batch, on held-out run 2's
  scores;
- in domain: the shipped classifier (``--head``) routes the test split per dataset and as one mixed batch, on the
  shipped model's scores (``--scores``).

    python benchmarks/batch_routing.py --encoder fast     # 128² caches, ~5 min
    python benchmarks/batch_routing.py --encoder main     # 256² caches (lodo_routing.py made them), ~5 min
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import emit
from _lodo import LodoSetup, add_lodo_arguments
from lodo_routing import route_test
from medseg.models.io import load_model
from medseg.routing.label_shift import adjust_posteriors, batch_prior, fit_temperature, temper

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_lodo_arguments(ap)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 32])
    ap.add_argument("--temperature", type=float, default=None,
                    help="use this temperature everywhere instead of the fitted ones (1: the raw posteriors)")
    ap.add_argument("--gate", type=float, default=None,
                    help="auto routing: share a batch's prior only if one task holds at least this share of it")
    ap.add_argument("--test", action="store_true", help="also route test images (see above)")
    ap.add_argument("--held-out-scores", type=Path,
                    default=REPO / "benchmarks/results/universal-heldout-cpu/scores")
    ap.add_argument("--scores", type=Path, default=REPO / "benchmarks/results/universal-cpu/scores",
                    help="the shipped model's per-image test scores")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/universal-cpu/batch-routing")
    args = ap.parse_args()

    lodo = LodoSetup(args.config, args.head, args.encoder, ("train", "val", *(("test",) if args.test else ())))
    folds = [tuple(f.split(",")) for f in args.folds]
    rows_out: list[dict[str, Any]] = []

    def score(scenario: str, group: str, batch: str, seed: int, probs: torch.Tensor, labels: torch.Tensor,
              chunks: list[np.ndarray], temperature: float, which: np.ndarray | None = None) -> None:
        """One row: per-image and batch-adjusted accuracy of ``probs`` tempered and adapted chunk by chunk
        (``which``: the rows of the concatenation to score)."""
        p = probs.double().numpy()
        adjusted = np.zeros_like(p)
        for c in chunks:
            adjusted[c] = adapted(p[c], temperature, args.gate)
        keep = np.arange(len(p)) if which is None else which
        y = labels.numpy()[keep]
        rows_out.append({"scenario": scenario, "group": group, "batch": batch, "seed": seed, "n": len(keep),
                         "per_image": float((p[keep].argmax(1) == y).mean()),
                         "batch_adjusted": float((adjusted[keep].argmax(1) == y).mean()), "temperature": temperature})

    def cut(n: int, size: int, seed: int) -> list[np.ndarray]:
        order = np.random.default_rng(seed).permutation(n)
        return [order[i:i + size] for i in range(0, n, size)]

    fits: dict[tuple[int, tuple[str, ...]], torch.nn.Module] = {}
    fitted_t: dict[tuple[int, tuple[str, ...]], float] = {}
    for seed in args.seeds:
        for held in folds:
            model, _ = lodo.fit(held, seed)
            fits[seed, held] = model
            p = torch.cat([lodo.probs(model, part, lodo.rows(part, set(held))) for part in ("train", "val")])
            y = torch.cat([lodo.labels[part][lodo.rows(part, set(held))] for part in ("train", "val")])
            fitted_t[seed, held] = fit_temperature(p.double().numpy(), y.numpy())
    shipped_t = float(np.median(list(fitted_t.values()))) if args.temperature is None else args.temperature

    def cross_t(held: tuple[str, ...]) -> float:
        """The other folds' fitted temperatures (mean over their seeds)."""
        if args.temperature is not None:
            return args.temperature
        return float(np.mean([t for (_, h), t in fitted_t.items() if h != held] or [shipped_t]))

    for seed in args.seeds:
        for held in folds:
            model, temp = fits[seed, held], cross_t(held)
            mixed_p, mixed_y, held_mask = [], [], []
            for d in held:
                p = torch.cat([lodo.probs(model, part, lodo.rows(part, {d})) for part in ("train", "val")])
                y = torch.cat([lodo.labels[part][lodo.rows(part, {d})] for part in ("train", "val")])
                score("held-out, one dataset", d, "all", seed, p, y, [np.arange(len(p))], temp)
                for b in args.batch_sizes:
                    score("held-out, one dataset", d, str(b), seed, p, y, cut(len(p), b, seed), temp)
                mixed_p.append(p)
                mixed_y.append(y)
                held_mask += [d] * len(p)
            vrows = lodo.rows("val", held, keep=False)
            mixed_p.append(lodo.probs(model, "val", vrows))
            mixed_y.append(lodo.labels["val"][vrows])
            held_mask += ["in-domain"] * len(vrows)
            p, y, groups = torch.cat(mixed_p), torch.cat(mixed_y), np.array(held_mask)
            for d in held:
                score("held-out + in-domain, mixed", d, "all", seed, p, y, [np.arange(len(p))], temp,
                      np.flatnonzero(groups == d))
            score("held-out + in-domain, mixed", "in-domain (" + "+".join(held) + " out)", "all", seed, p, y,
                  [np.arange(len(p))], temp, np.flatnonzero(groups == "in-domain"))
        model, _ = lodo.fit((), seed)
        p, y = lodo.probs(model, "val", list(range(len(lodo.datasets["val"])))), lodo.labels["val"]
        sets = np.array(lodo.datasets["val"])
        score("in-domain", "every dataset, one batch each", "all", seed, p, y,
              [np.flatnonzero(sets == d) for d in sorted(set(sets))], shipped_t)
        score("in-domain", "all datasets, mixed", "all", seed, p, y, [np.arange(len(p))], shipped_t)
        for b in args.batch_sizes:
            score("in-domain", "all datasets, mixed", str(b), seed, p, y, cut(len(p), b, seed), shipped_t)

    table: list[dict[str, Any]] = []
    keys = list(dict.fromkeys((r["scenario"], r["group"], r["batch"]) for r in rows_out))
    for key in keys:
        rs = [r for r in rows_out if (r["scenario"], r["group"], r["batch"]) == key]
        table.append({"scenario": key[0], "group": key[1], "batch": key[2], "n": rs[0]["n"], "seeds": len(rs),
                      "per_image": float(np.mean([r["per_image"] for r in rs])),
                      "batch_adjusted": float(np.mean([r["batch_adjusted"] for r in rs])),
                      "temperature": float(np.mean([r["temperature"] for r in rs])),
                      "per_seed_adjusted": " ".join(f"{r['batch_adjusted']:.3f}" for r in rs)})

    def mean_of(scenario: str, batch: str, groups: list[str] | None = None, col: str = "batch_adjusted") -> float:
        return float(np.mean([t[col] for t in table if t["scenario"] == scenario and t["batch"] == batch
                              and (groups is None or t["group"] in groups)]))

    held_sets = [d for f in folds for d in f]
    one = ("held-out, one dataset", "all", held_sets)
    mixed = ("held-out + in-domain, mixed", "all", held_sets)
    in_rows = [t for t in table if t["scenario"] == "in-domain"
               or (t["scenario"] == "held-out + in-domain, mixed" and t["group"].startswith("in-domain"))]
    rule = {"held-out one-dataset batches rise": mean_of(*one) > mean_of(*one, col="per_image"),
            "held-out in mixed batches does not fall": mean_of(*mixed) >= mean_of(*mixed, col="per_image"),
            "no in-domain accuracy falls": all(t["batch_adjusted"] >= t["per_image"] for t in in_rows)}
    summary = [{"encoder": args.encoder, "check": k, "per_image": v_pi, "batch_adjusted": v_ba, "holds": ok}
               for (k, ok), (v_pi, v_ba) in zip(rule.items(), [
                   (mean_of(*one, col="per_image"), mean_of(*one)), (mean_of(*mixed, col="per_image"), mean_of(*mixed)),
                   (float(np.mean([t["per_image"] for t in in_rows])), float(np.mean([t["batch_adjusted"]
                                                                                      for t in in_rows])))],
                   strict=True)]
    summary.append({"encoder": args.encoder, "check": "adopt as the default", "per_image": "", "batch_adjusted": "",
                    "holds": all(rule.values())})
    temps = [{"encoder": args.encoder, "seed": s_, "fold": "+".join(h), "fitted_temperature": t}
             for (s_, h), t in fitted_t.items()]
    temps.append({"encoder": args.encoder, "seed": "", "fold": "median (routing_temperature)",
                  "fitted_temperature": shipped_t})
    slug = (f"{args.encoder}_encoder" + ("" if args.temperature is None else f"_t{args.temperature:g}")
            + ("" if args.gate is None else f"_gate{args.gate:g}"))
    emit(f"Batch routing {slug}", table, args.out)
    emit(f"Batch routing {slug} summary", summary, args.out)
    emit(f"Batch routing {slug} temperatures", temps, args.out)
    if args.test:
        seed = lodo.refit.seed if lodo.refit.seed in args.seeds else args.seeds[0]
        held_rows = route_batches(lodo, {"held-out fold classifier": fits[seed, folds[0]]}, folds[0], shipped_t,
                                  args.held_out_scores, args.gate)
        shipped = load_model(args.head).model
        all_sets = tuple(sorted(set(lodo.datasets["test"])))
        in_rows = route_batches(lodo, {"shipped classifier": shipped}, all_sets, shipped_t, args.scores, args.gate)
        emit(f"Batch routing {slug} test held-out pair", held_rows, args.out)
        emit(f"Batch routing {slug} test in-domain", in_rows, args.out)


def adapted(probs: np.ndarray, temperature: float, gate: float | None) -> np.ndarray:
    """(N, K) the batch-adjusted posteriors of one batch's (N, K) ``probs``: tempered, EM's prior, and with
    ``gate`` that prior only if one task holds at least ``gate`` of it (``auto`` routing)."""
    return adjust_posteriors(temper(probs, temperature), batch_prior(probs, temperature, gate))


def route_batches(lodo: LodoSetup, models: dict[str, torch.nn.Module], datasets: tuple[str, ...], temperature: float,
                  scores: Path, gate: float | None = None) -> list[dict[str, Any]]:
    """Test routing of ``datasets`` per image, per dataset as one batch, and with the whole test split as one
    batch, with the Dice implied on ``scores`` (``lodo_routing.route_test``)."""
    everything = list(range(len(lodo.datasets["test"])))
    out: list[dict[str, Any]] = []
    for name, model in models.items():
        probs = lodo.probs(model, "test", everything).double().numpy()
        mixed = adapted(probs, temperature, gate).argmax(1)
        routes = {"per image": lambda rows, p=probs: p[rows].argmax(1),
                  "each dataset one batch": lambda rows, p=probs: adapted(p[rows], temperature, gate).argmax(1),
                  "whole test split one batch": lambda rows, m=mixed: m[rows]}
        for routing, chosen in routes.items():
            for r in route_test({name: model}, datasets, lodo.datasets, lodo.labels,
                                lambda _m, _part, rows, c=chosen: torch.from_numpy(c(rows)), lodo.tasks, scores,
                                lodo.info):
                r.pop("variant")
                out.append({"classifier": name, "routing": routing, "dataset": r.pop("dataset"), "n": r.pop("n"),
                            "routing_accuracy": r.pop("routing_accuracy"), "implied_dice": r.pop("universal_dice"),
                            "exact_images": r.pop("exact_images"),
                            "scored_run_accuracy": r.pop("held_out_run2_accuracy"),
                            "scored_run_dice": r.pop("held_out_run2_dice")})
    return out


if __name__ == "__main__":
    main()
