"""Choose a network for distribution targets without touching the test split.

How the networks of docs/results.md's distribution-target evidence were chosen: each variant
(hidden width, dropout, weight decay, learning rate, epochs) trains on 80 % of a split's
training rows, picks its epoch on the split's validation rows (KL, as ``emdloss train`` does),
and is scored on the other 20 % of the training rows (the *dev* rows), beside the two fitted LDL
baselines (AA-kNN and the linear softmax fitted by KL, their settings chosen on validation).
The test rows are never read. The loop is plain PyTorch (AdamW, exponential decay 0.995 per
epoch, batch 64, soft cross-entropy or squared EMD), the same network as ``mlp``::

    python scripts/distribution_dev_search.py --dataset ldl:../shared/data/ldl/Movie.mat \\
        --splits 0,1,2 --variant "hidden=256,wd=3,lr=1e-3,epochs=15,dropout=0.7" \\
        --variant "hidden=32,wd=1,lr=3e-3,epochs=8"

A split is a fold of a 10-fold partition for ``ldl:`` files and a seed otherwise (MEBeauty's
official split is the same for every seed: its dev rows then change with the seed). The means
over the splits are printed, a line per model; ``ensemble=K`` averages K networks' predictions
(trained one after another, each with its own seed, shuffle and epoch: unlike ``emdloss train
--ensemble``, whose members share the batches and the selected epoch).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emdloss.data import load_dataset
from emdloss.ldl_baselines import KNNDistribution, LinearSoftmaxKL
from emdloss.metrics import distribution_metrics

MEASURES = (
    "kl",
    "chebyshev",
    "clark",
    "canberra",
    "cosine",
    "intersection",
    "emd2",
    "mean_mae",
    "lcc",
    "srcc",
    "mode_accuracy",
)
Arrays = tuple[np.ndarray, np.ndarray]


def _splits(dataset: str, split: int, options: dict[str, str]) -> tuple[Arrays, Arrays, Arrays]:
    """(fit, validation, dev): the dev rows are a seeded fifth of the training rows."""
    folds = {"fold": split, "num_folds": 10} if dataset.startswith("ldl:") else {"seed": split}
    ds = load_dataset(dataset, **folds, **options)

    def arrays(part: Any) -> Arrays:
        # Item by item: a split cut by the limit option is a subset without whole tensors.
        items = [part[i] for i in range(len(part))]
        x = torch.stack([item[0] for item in items]).double().numpy()
        return x, torch.stack([item[2] for item in items]).double().numpy()

    (x, t), val = arrays(ds.train), arrays(ds.val)
    order = np.random.default_rng(100 + split).permutation(len(x))
    dev, fit = order[: len(x) // 5], order[len(x) // 5 :]
    return (x[fit], t[fit]), val, (x[dev], t[dev])


def _score(probs: np.ndarray, target: np.ndarray) -> dict[str, float]:
    values = distribution_metrics(torch.as_tensor(probs), torch.as_tensor(target))
    return {k: float(values[k]) for k in MEASURES}


def _train(
    fit: Arrays,
    val: Arrays,
    seed: int,
    *,
    hidden: int = 32,
    dropout: float = 0.0,
    wd: float = 1.0,
    lr: float = 3e-3,
    epochs: int = 8,
    loss: str = "ce",
) -> Any:
    """One network, its epoch chosen on validation KL; returns its predict function."""
    torch.manual_seed(seed)
    x, t = (torch.tensor(a, dtype=torch.float32) for a in fit)
    xv, tv = (torch.tensor(a, dtype=torch.float32) for a in val)
    net = nn.Sequential(
        nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, t.shape[1])
    )
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, 0.995)
    order = torch.Generator().manual_seed(seed)
    best, kept = float("inf"), [p.detach().clone() for p in net.parameters()]
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=order)
        for i in range(0, len(x), 64):
            z, target = net(x[perm[i : i + 64]]), t[perm[i : i + 64]]
            if loss == "ce":
                value = -(target * F.log_softmax(z, 1)).sum(1).mean()
            else:  # the class-mean squared EMD
                value = ((F.softmax(z, 1).cumsum(1) - target.cumsum(1)) ** 2).mean()
            opt.zero_grad()
            value.backward()
            opt.step()
        schedule.step()
        net.eval()
        with torch.no_grad():
            kl = float(distribution_metrics(F.softmax(net(xv), 1).double(), tv.double())["kl"])
        if kl < best:
            best, kept = kl, [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        for p, k in zip(net.parameters(), kept, strict=True):
            p.copy_(k)
    net.eval()

    def predict(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = net(torch.tensor(features, dtype=torch.float32))
            return F.softmax(z, 1).double().numpy()

    return predict


def _variant(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        out[key.strip()] = value if key.strip() == "loss" else float(value)
    for key in ("hidden", "epochs", "ensemble"):
        if key in out:
            out[key] = int(out[key])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--splits", default="0,1,2")
    parser.add_argument("--variant", action="append", required=True, metavar="KEY=V,...")
    args = parser.parse_args(argv)
    options = dict(item.split("=", 1) for item in args.data_option)
    torch.set_num_threads(1)
    scores: dict[str, list[dict[str, float]]] = {}
    for split in (int(s) for s in args.splits.split(",")):
        fit, val, dev = _splits(args.dataset, split, options)
        for name, baseline in (("linear_kl", LinearSoftmaxKL()), ("aa_knn", KNNDistribution())):
            scores.setdefault(name, []).append(
                _score(baseline.fit(*fit, *val).predict(dev[0]), dev[1])
            )
        for text in args.variant:
            settings = _variant(text)
            members = settings.pop("ensemble", 1)
            start = time.perf_counter()
            probs = [_train(fit, val, seed, **settings)(dev[0]) for seed in range(members)]
            scores.setdefault(text, []).append(_score(np.mean(probs, axis=0), dev[1]))
            print(f"split {split} {text}: {time.perf_counter() - start:.1f} s", flush=True)
    print("model | " + " | ".join(MEASURES))
    for name, rows in scores.items():
        means = (np.mean([row[k] for row in rows]) for k in MEASURES)
        print(f"{name} | " + " | ".join(f"{m:.4f}" for m in means))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
