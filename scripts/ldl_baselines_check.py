"""Check the distribution baselines on Movie against the reference numbers measured here.

10-fold cross-validation, one repetition (folds from a seeded permutation), features
standardised on each training fold (the models do it themselves). A tuned model chooses its
setting on an inner validation split (10 % of the training fold) and keeps the fit on the rest;
the fixed ones (``k = 10``, ``l2 = 0``, as in the reference table) train on the whole fold.
Prints our means over folds beside the reference rows of ``../shared/docs/reference.md``
(whose ``emd2`` is the sum form, ``C`` times our ``emd2``).

    PYTHONPATH=src python scripts/ldl_baselines_check.py [--data PATH/Movie.mat] [--models ...]

Reads research data (never copied into the repository); takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

SHOWN = ("chebyshev", "clark", "canberra", "kl", "cosine", "intersection", "emd2")
#: ../shared/docs/reference.md, Movie (emd2 there is the sum form).
REFERENCE = {
    "mean": (0.130, 0.593, 1.133, 0.127, 0.918, 0.811, 0.084),
    "aa_knn k=10": (0.123, 0.556, 1.059, 0.111, 0.927, 0.824, 0.072),
    "linear_kl l2=0": (0.128, 0.561, 1.080, 0.124, 0.922, 0.820, 0.077),
}


def _default_data() -> Path:
    root = os.environ.get("EMDLOSS_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "ldl" / "Movie.mat"


def _models() -> dict[str, Any]:
    from emdloss.ldl_baselines import KNNDistribution, LinearSoftmaxKL, MeanDistribution

    return {
        "mean": MeanDistribution,
        "aa_knn k=10": lambda: KNNDistribution(k=10),
        "aa_knn tuned": KNNDistribution,
        "linear_kl l2=0": lambda: LinearSoftmaxKL(l2=0.0),
        "linear_kl tuned": LinearSoftmaxKL,
    }


def main(argv: list[str] | None = None) -> int:
    from scipy.io import loadmat

    from emdloss.metrics.distribution import distribution_metrics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=_default_data(), help="Movie.mat")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models", nargs="+", choices=list(_models()), default=list(_models()), metavar="NAME"
    )
    args = parser.parse_args(argv)
    mat = loadmat(args.data)
    x, t = np.asarray(mat["features"], float), np.asarray(mat["labels"], float)
    t = t / t.sum(axis=1, keepdims=True)
    c = t.shape[1]
    rng = np.random.default_rng(args.seed)
    folds = np.array_split(rng.permutation(len(x)), args.folds)
    models = {name: make for name, make in _models().items() if name in args.models}
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    seconds = dict.fromkeys(models, 0.0)
    chosen: dict[str, list[Any]] = {name: [] for name in models}
    for f, test in enumerate(folds):
        train = np.concatenate([folds[g] for g in range(args.folds) if g != f])
        inner = np.random.default_rng(args.seed + 1 + f).permutation(train)
        n_val = len(train) // 10
        val, fit = inner[:n_val], inner[n_val:]
        for name, make in models.items():
            start = time.perf_counter()
            model = make()
            if name.endswith("tuned"):
                model.fit(x[fit], t[fit], x[val], t[val])
                chosen[name].append(getattr(model, "k_", None) or getattr(model, "l2_", None))
            else:
                model.fit(x[train], t[train])
            scores[name].append(distribution_metrics(model.predict(x[test]), t[test]))
            seconds[name] += time.perf_counter() - start
            cheb = scores[name][-1]["chebyshev"]
            print(f"fold {f + 1}: {name} chebyshev {cheb:.4f}", flush=True)  # progress
    print(
        f"\nMovie: {len(x)} items, {x.shape[1]} features, {c} levels; {args.folds}-fold CV, ",
        end="",
    )
    print(
        f"seed {args.seed}; emd2 in the sum form (C x ours); seconds: fit and predict, all folds\n"
    )
    print("| model | source | " + " | ".join(SHOWN) + " | seconds | chosen |")
    print("|---|---|" + "---|" * (len(SHOWN) + 2))
    for name, rows in scores.items():
        means = [float(np.mean([r[k] for r in rows])) * (c if k == "emd2" else 1) for k in SHOWN]
        picks = ", ".join(str(v) for v in chosen[name]) if chosen[name] else ""
        print(
            f"| {name} | ours | "
            + " | ".join(f"{v:.3f}" for v in means)
            + f" | {seconds[name]:.0f} | {picks} |"
        )
        if name in REFERENCE:
            print(
                f"| {name} | reference | "
                + " | ".join(f"{v:.3f}" for v in REFERENCE[name])
                + " | | |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
