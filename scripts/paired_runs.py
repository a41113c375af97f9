"""Paired verdict between two losses that live in two ``emdloss compare`` outputs.

``compare`` pairs the losses of one output by seed. A variant of a loss that differs in a loss
option (e.g. ``xemd1`` with its learned ground distance against ``xemd1`` with the same recipe
and a predefined matrix, ``--set loss_options={emd_term: fixed, cost_matrix: ...}``) runs into a
second output under the same name. Runs with the same data set, seed and fold share the split,
the initialisation seed and the batch order whichever output they are in, so they pair the same
way. This script reads both ``results.csv`` files and prints, per data set, prediction rule and
metric, the mean paired difference A - B with its paired-t 95 % interval and the verdict
("beats" only when the interval excludes 0), with the same code as ``compare``'s summaries::

    python scripts/paired_runs.py runs/evidence-retina20:xemd1 runs/fixed-retina20:xemd1 \\
        --label-a learned --label-b predefined
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from emdloss.compare._stats import paired_difference

METRICS = ("accuracy", "mae", "qwk", "rps")
RULES = ("argmax", "median", "validated")


def _side(spec: str) -> tuple[Path, str]:
    path, sep, loss = spec.rpartition(":")
    if not sep or not path or not loss:
        raise SystemExit(f"expected OUTPUT_DIR:LOSS, got {spec!r}")
    csv_path = Path(path) / "results.csv"
    if not csv_path.is_file():
        raise SystemExit(f"{csv_path} does not exist (run emdloss compare into {path} first)")
    return csv_path, loss


def _values(csv_path: Path, loss: str) -> dict[tuple[str, str, str], dict[tuple[str, str], float]]:
    """``{(dataset, rule, metric): {(seed, fold): value}}`` of one loss."""
    out: dict[tuple[str, str, str], dict[tuple[str, str], float]] = {}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["loss"] != loss or row.get("setting"):
                continue
            for metric in METRICS:
                if row.get(metric, "") == "":
                    continue
                key = (row["dataset"], row["rule"], metric)
                out.setdefault(key, {})[(row["seed"], row["fold"])] = float(row[metric])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="OUTPUT_DIR:LOSS, the candidate")
    parser.add_argument("b", help="OUTPUT_DIR:LOSS, the reference")
    parser.add_argument("--label-a", default=None, help="name of A in the table")
    parser.add_argument("--label-b", default=None, help="name of B in the table")
    parser.add_argument(
        "--test-train-ratio",
        type=float,
        default=None,
        help="test rows over training and validation rows of one run, where the test rows are "
        "resampled (hold-outs per seed: 0.3/0.7; k folds: 1/(k-1)): the corrected resampled "
        "t interval of Nadeau & Bengio instead of the plain paired t",
    )
    args = parser.parse_args(argv)
    (path_a, loss_a), (path_b, loss_b) = _side(args.a), _side(args.b)
    a, b = _values(path_a, loss_a), _values(path_b, loss_b)
    label_a, label_b = args.label_a or loss_a, args.label_b or loss_b
    keys = sorted(set(a) & set(b))
    if not keys:
        raise SystemExit(f"no data set, rule and metric in common between {args.a} and {args.b}")
    print(f"| data set | rule | metric | {label_a} - {label_b}: mean [95% CI] | pairs | verdict |")
    print("|---|---|---|---|---|---|")
    for dataset, rule, metric in keys:
        if rule not in RULES:
            continue
        d = paired_difference(
            a[(dataset, rule, metric)],
            b[(dataset, rule, metric)],
            test_train_ratio=args.test_train_ratio,
        )
        print(
            f"| {dataset} | {rule} | {metric} | {d.short()} | {d.n} | "
            f"{label_a} {d.outcome(metric)} {label_b} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
