"""``compare --conformal ALPHA``: conformal prediction sets for every finished run.

Each run is calibrated on its own validation split (:func:`emdloss.training.calibrate_run`,
stored in its ``calibrator.json``; a stored calibration with the same alpha, score and
checkpoint is reused) and assessed on its test split. The comparison then reports per loss the
test coverage and mean set size (``results.csv`` columns, a summary section with the verdict on
set size against cross-entropy) and plots the mean set size against alpha per loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emdloss.compare._plan import dataset_slug, is_emd_variant
from emdloss.compare._records import RunRecord
from emdloss.compare._rows import DatasetInfo, Stat
from emdloss.compare._stats import Interval, paired_difference

__all__ = [
    "CONFORMAL_COLUMNS",
    "add_conformal_columns",
    "calibrate_records",
    "conformal_section",
    "plot_set_sizes",
]

#: Columns ``results.csv`` gains with ``--conformal`` (the same value on every rule's row).
CONFORMAL_COLUMNS: tuple[str, ...] = ("coverage", "mean_set_size")


def _reusable(record: Mapping[str, Any] | None, alpha: float, method: str) -> bool:
    if record is None:
        return False
    cal = record.get("calibrator", {})
    return (
        record.get("split") == "val"
        and cal.get("method") == method
        and cal.get("alpha") == alpha
        and "curve" in record
    )


def calibrate_records(
    records: Sequence[RunRecord], alpha: float, method: str = "cdf"
) -> dict[Path, dict[str, Any]]:
    """Calibrate every finished run (validation split) and return ``{run_dir: record}``.

    A run whose calibration fails (e.g. its data moved) maps to ``{"error": message}``.
    """
    from emdloss.training import calibrate_run, load_run_calibrator

    out: dict[Path, dict[str, Any]] = {}
    for record in records:
        if not record.metrics:
            continue
        try:
            stored = load_run_calibrator(record.run_dir)
        except ValueError:  # another checkpoint or a malformed file: calibrate again
            stored = None
        if stored is not None and _reusable(stored[1], alpha, method):
            out[record.run_dir] = stored[1]
            continue
        try:
            out[record.run_dir] = calibrate_run(record.run_dir, alpha=alpha, method=method)
        except (OSError, ValueError, RuntimeError) as error:
            out[record.run_dir] = {"error": f"{type(error).__name__}: {error}"}
    return out


def add_conformal_columns(
    rows: Sequence[dict[str, Any]],
    records: Sequence[RunRecord],
    calibrations: Mapping[Path, Mapping[str, Any]],
) -> None:
    """Add :data:`CONFORMAL_COLUMNS` to the ``results.csv`` rows of calibrated runs (in place;
    NaN where a run could not be calibrated)."""
    by_spec = {
        (r.spec.dataset, r.spec.loss, r.spec.seed, r.spec.fold): calibrations.get(r.run_dir, {})
        for r in records
    }
    for row in rows:
        found = by_spec.get((row["dataset"], row["loss"], row["seed"], row["fold"]), {})
        evaluation = found.get("evaluation", {})
        for column in CONFORMAL_COLUMNS:
            row[column] = float(evaluation.get(column, math.nan))


def _stats(
    records: Sequence[RunRecord], calibrations: Mapping[Path, Mapping[str, Any]], spec: str
) -> dict[str, dict[str, Any]]:
    per_loss: dict[str, dict[str, Any]] = {}
    for record in records:
        found = calibrations.get(record.run_dir, {})
        if record.spec.dataset != spec or "evaluation" not in found:
            continue
        entry = per_loss.setdefault(record.spec.loss, {"coverage": [], "size": [], "by_run": {}})
        entry["coverage"].append(found["evaluation"]["coverage"])
        entry["size"].append(found["evaluation"]["mean_set_size"])
        entry["by_run"][(record.spec.seed, record.spec.fold)] = found["evaluation"]
    return per_loss


def _paired_size_difference(
    a: Mapping[Any, Any], b: Mapping[Any, Any], test_train_ratio: float | None
) -> Interval:
    """Set size of ``a`` minus ``b``, paired over the runs (seed, fold) both have (paired t)."""
    return paired_difference(
        {k: v["mean_set_size"] for k, v in a.items()},
        {k: v["mean_set_size"] for k, v in b.items()},
        test_train_ratio=test_train_ratio,
    )


def conformal_section(
    records: Sequence[RunRecord],
    calibrations: Mapping[Path, Mapping[str, Any]],
    infos: Sequence[DatasetInfo],
    alpha: float,
    method: str,
) -> str:
    """The summary's section on prediction sets: coverage and set size per loss, and the
    verdict on set size at the same target coverage against cross-entropy."""
    lines = [
        f"## Conformal prediction sets (alpha = {alpha:g}, score `{method}`)",
        "",
        f"Each run calibrated on its validation split, sets assessed on test; target coverage "
        f">= {1 - alpha:g} (marginal, under exchangeability; see docs/conformal.md). Mean ± sd "
        "over runs.",
        "",
    ]
    failed = [str(d) for d, c in calibrations.items() if "error" in c]
    for info in infos:
        per_loss = _stats(records, calibrations, info.spec)
        if not per_loss:
            continue
        lines += [
            f"### {info.spec}",
            "",
            "| loss | test coverage | mean set size | runs |",
            "|---|---|---|---|",
        ]
        for loss in info.losses:
            if loss in per_loss:
                entry = per_loss[loss]
                lines.append(
                    f"| {loss} | {Stat.of(entry['coverage']).format()} | "
                    f"{Stat.of(entry['size']).format(2)} | {len(entry['size'])} |"
                )
        lines.append("")
        if "ce" in per_loss:
            verdicts = []
            for loss in info.losses:
                if loss == "ce" or loss not in per_loss:
                    continue
                diff = _paired_size_difference(
                    per_loss[loss]["by_run"], per_loss["ce"]["by_run"], info.test_train_ratio
                )
                if diff.n == 0:
                    continue
                if math.isnan(diff.low):
                    judged = "too few runs to judge"
                elif diff.excludes_zero():
                    judged = "narrower" if diff.mean < 0 else "wider"
                else:
                    judged = "tie"
                kind = "EMD variant" if is_emd_variant(loss) else "peer/baseline"
                verdicts.append(f"{loss} ({kind}) {diff.format(2)} classes: {judged}")
            if verdicts:
                lines += [
                    f"**Set size against cross-entropy ({info.spec}):** paired by seed, at the "
                    "same target coverage; narrower or wider only when the 95% paired-t interval "
                    "excludes 0: " + "; ".join(verdicts) + ".",
                    "",
                ]
    if failed:
        lines += [f"Not calibrated (error): {', '.join(failed)}.", ""]
    return "\n".join(lines)


def plot_set_sizes(
    out: Path,
    records: Sequence[RunRecord],
    calibrations: Mapping[Path, Mapping[str, Any]],
    infos: Sequence[DatasetInfo],
) -> list[Path]:
    """``plots/<dataset>/set_size.png``: mean test set size against alpha per loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from emdloss._atomic import atomic_path

    files: list[Path] = []
    for info in infos:
        curves: dict[str, list[list[float]]] = {}
        alphas: list[float] = []
        for record in records:
            found = calibrations.get(record.run_dir, {})
            if record.spec.dataset != info.spec or "curve" not in found:
                continue
            alphas = list(found["curve"]["alphas"])
            curves.setdefault(record.spec.loss, []).append(found["curve"]["mean_set_size"])
        if not curves:
            continue
        figure, axis = plt.subplots(figsize=(6, 4))
        for loss in info.losses:
            if loss in curves:
                values = np.asarray(curves[loss], dtype=float)
                axis.plot(alphas, values.mean(axis=0), marker="o", label=loss)
        axis.set_xlabel("alpha (target miscoverage)")
        axis.set_ylabel("mean test set size (classes)")
        axis.set_title(f"{info.spec}: conformal set size, mean over runs")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
        path = out / "plots" / dataset_slug(info.spec) / "set_size.png"
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
        plt.close(figure)
        files.append(path)
    return files
