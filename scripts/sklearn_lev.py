"""EMDClassifier beside LogisticRegression and statsmodels' OrderedModel on skordinal's LEV.

LEV (1000 rows, 4 integer features, 5 ordered classes) from ``skordinal.datasets.load_lev``.
For each seed, a stratified 75/25 split (``train_test_split(..., random_state=seed)``); every
model is fitted on the 75 % with fixed, untuned settings and scored on the 25 %. Class
probabilities are decoded with the median rule (MAE-optimal) for MAE and QWK and with argmax
for accuracy, for every model alike. Prints a Markdown table of mean ± sd over the seeds.

    python scripts/sklearn_lev.py --seeds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emdloss.decoding import decode
from emdloss.sklearn import EMDClassifier

Probs = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def _emd(loss: str) -> Probs:
    def fit_predict(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, seed: int) -> np.ndarray:
        model = make_pipeline(StandardScaler(), EMDClassifier(loss, random_state=seed))
        proba: np.ndarray = model.fit(X, y).predict_proba(X_test)
        return proba

    return fit_predict


def _logistic(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, seed: int) -> np.ndarray:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    proba: np.ndarray = model.fit(X, y).predict_proba(X_test)
    return proba


def _ordered(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, seed: int) -> np.ndarray:
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    scaler = StandardScaler().fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of the BFGS fit
        result = OrderedModel(y, scaler.transform(X), distr="logit").fit(
            method="bfgs", disp=False, maxiter=2000
        )
    proba: np.ndarray = np.asarray(result.predict(scaler.transform(X_test)))
    return proba


MODELS: dict[str, Probs] = {
    "EMDClassifier(emd2)": _emd("emd2"),
    "EMDClassifier(xemd1)": _emd("xemd1"),
    "EMDClassifier(ce)": _emd("ce"),
    "LogisticRegression": _logistic,
    "OrderedModel (logit)": _ordered,
}


def evaluate(seeds: int) -> dict[str, dict[str, list[float]]]:
    """Per model, per metric, one value per seed."""
    from skordinal.datasets import load_lev

    data = load_lev()
    X, y = np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.int64)
    out: dict[str, dict[str, list[float]]] = {m: {} for m in MODELS}
    for seed in range(seeds):
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=0.25, stratify=y, random_state=seed
        )
        for name, fit_predict in MODELS.items():
            start = time.perf_counter()
            probs = torch.as_tensor(fit_predict(X_tr, y_tr, X_te, seed))
            seconds = time.perf_counter() - start
            median = decode(probs, "median").numpy()
            argmax = decode(probs, "argmax").numpy()
            row = {
                "MAE (median)": float(np.abs(median - y_te).mean()),
                "QWK (median)": float(cohen_kappa_score(y_te, median, weights="quadratic")),
                "accuracy (argmax)": float((argmax == y_te).mean()),
                "fit s": seconds,
            }
            for key, value in row.items():
                out[name].setdefault(key, []).append(value)
    return out


def table(results: dict[str, dict[str, list[float]]]) -> str:
    """A Markdown table of mean ± sd."""
    keys = list(next(iter(results.values())))
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, metrics in results.items():
        cells = []
        for key in keys:
            values = metrics[key]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            digits = 2 if key == "fit s" else 3
            cells.append(f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of splits (seeds 0..n-1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny networks: one thread is fastest on a shared machine
    print(table(evaluate(args.seeds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
