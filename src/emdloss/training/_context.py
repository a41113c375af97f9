"""What a run should tell its user besides its scores: what the data became, the scores of
trivial predictors beside the model's, and how many threads the run uses (issue 10)."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from emdloss.errors import InputWarning
from emdloss.training.config import TrainConfig

__all__ = [
    "announce_data",
    "baseline_rows",
    "baseline_scores",
    "describe_data",
    "distribution_record",
    "kept_threads",
    "use_threads",
]

#: Networks small enough that one intra-op thread is the fastest choice (docs/training.md).
SMALL_MODELS = frozenset({"mlp", "cnn"})


@contextlib.contextmanager
def kept_threads() -> Iterator[None]:
    """Restore torch's intra-op threads on exit: a run's setting must not outlive the run in
    the caller's process (a notebook, compare's workers)."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def use_threads(config: TrainConfig, model: str) -> int:
    """Set torch's intra-op threads for a run and return the number.

    ``config.threads`` when given; else one thread for the small models of
    :data:`SMALL_MODELS` (two threads made their epochs 8-10x slower on a loaded machine);
    else torch's current setting (one per core, or ``OMP_NUM_THREADS``).
    """
    if config.threads is not None:
        threads = int(config.threads)
    elif model in SMALL_MODELS:
        threads = 1
    else:
        return torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads


def _val_hint(config: TrainConfig) -> str:
    now = config.data_options.get("val_fraction", 0.1)
    hint = f"raise the validation share with --data-option val_fraction=F (now {now})"
    if config.limit_val is not None:
        hint += f", or --limit-val (now {config.limit_val})"
    return hint


def describe_data(config: TrainConfig, dataset: Any) -> dict[str, Any]:
    """:func:`emdloss.data.inspection.describe_dataset` with the hints of the command line."""
    from emdloss.data.inspection import describe_dataset

    return describe_dataset(dataset, hint=_val_hint(config))


def announce_data(description: dict[str, Any], *, verbose: bool) -> None:
    """Print the description to stderr (when ``verbose``) and issue its warnings.

    Every warning is an :class:`emdloss.errors.InputWarning` (one line each under the
    ``emdloss`` command), whatever ``verbose`` says.
    """
    from emdloss.data.inspection import description_lines

    if verbose:
        for line in description_lines({**description, "warnings": []}):
            print(line, file=sys.stderr)
    for warning in description["warnings"]:
        warnings.warn(warning["message"], InputWarning, stacklevel=3)


def baseline_scores(dataset: Any) -> dict[str, dict[str, dict[str, float]]]:
    """Scores of the constant predictors fitted on the training labels, per split.

    Returns
    -------
    dict
        ``{"val": {...}, "test": {...}}``, each as
        :func:`emdloss.metrics.trivial_baselines` returns it (``most_common``, ``median``).
    """
    from emdloss.metrics.baselines import trivial_baselines

    train = torch.as_tensor(dataset.train.targets)
    return {
        part: trivial_baselines(
            train,
            torch.as_tensor(getattr(dataset, part).targets),
            num_classes=dataset.num_classes,
            positions=dataset.positions,
        )
        for part in ("val", "test")
    }


def distribution_record(
    dataset: Any, select: str = "kl", *, baselines: bool = True
) -> dict[str, Any]:
    """What ``metrics.json`` holds besides the model's measures on distribution targets.

    ``distribution_baselines``: the LDL baselines fitted on the training items and scored on
    validation and test (``{part: {baseline: {measure: value}}}``, hyper-parameters chosen on
    validation by ``select``); ``noise_floor`` (when the
    data gave vote counts): per part, what a model that predicted each item's true
    distribution would score given its number of votes (:func:`emdloss.metrics.distribution.
    noise_floor`). Empty for data with class labels.
    """
    if not getattr(dataset, "distribution_targets", False):
        return {}
    from emdloss.metrics.distribution import noise_floor

    record: dict[str, Any] = {}
    if baselines:
        record["distribution_baselines"] = distribution_baseline_scores(dataset, select)
    floors = {}
    for part in ("val", "test"):
        split = getattr(dataset, part)
        if split.votes is None or split.dists is None:
            continue
        counts = (split.dists.double() * split.votes.double()[:, None]).round()
        floor = noise_floor(counts, positions=dataset.positions, draws=200, seed=0)
        floors[part] = {"mean": floor.mean, "sd": floor.sd, "mean_votes": floor.mean_votes}
    if floors:
        record["noise_floor"] = floors
    return record


#: Side of the images the LDL baselines see on image data: each image (at the data set's
#: ``image_size``) averaged down to at most this many pixels a side, RGB, one feature a value.
BASELINE_PIXELS = 16


def baseline_features(split: Any, kind: str) -> Any:
    """The inputs the LDL baselines fit on, float64 ``(N, d)``: a table's (encoded) features, or
    an image's pixels averaged down to at most :data:`BASELINE_PIXELS` a side (``3 * 16 * 16 =
    768`` values for RGB).

    Examples
    --------
    >>> from torch.utils.data import TensorDataset
    >>> class Split(TensorDataset):
    ...     def input(self, i):
    ...         return self.tensors[0][i]
    >>> baseline_features(Split(torch.ones(2, 3, 32, 32)), "image").shape
    (2, 768)
    """
    rows = [split.input(i) for i in range(len(split))]
    x = torch.stack(rows).double() if rows else torch.zeros(0, 1, dtype=torch.float64)
    if kind != "tabular" and x.ndim == 4:
        side = min(BASELINE_PIXELS, int(x.shape[-1]), int(x.shape[-2]))
        x = torch.nn.functional.adaptive_avg_pool2d(x, side).flatten(1)
    return x.numpy()


def distribution_baseline_scores(
    dataset: Any, select: str = "kl"
) -> dict[str, dict[str, dict[str, float]]]:
    """The LDL baselines (:mod:`emdloss.ldl_baselines`) fitted on the training items, their
    hyper-parameter chosen on validation by ``select``, scored on validation and test.

    On tables they fit on the (standardised) features; on images on the pixels averaged down
    to 16 x 16 (:func:`baseline_features`): AA-kNN and the linear softmax then say how much of
    the target a model without learned features finds in the raw image.

    Returns
    -------
    dict
        ``{"val": {name: {measure: value}}, "test": {...}}``.
    """
    from emdloss.ldl_baselines import DISTRIBUTION_BASELINES, build_baseline
    from emdloss.metrics import distribution_metrics

    x = {
        part: baseline_features(getattr(dataset, part), dataset.kind)
        for part in ("train", "val", "test")
    }
    t = {part: getattr(dataset, part).dists.double().numpy() for part in ("train", "val", "test")}
    scores: dict[str, dict[str, dict[str, float]]] = {"val": {}, "test": {}}
    for name in DISTRIBUTION_BASELINES:
        options = {} if name == "mean" else {"select": select}
        model = build_baseline(name, **options).fit(x["train"], t["train"], x["val"], t["val"])
        for part in ("val", "test"):
            scores[part][name] = distribution_metrics(
                model.predict(x[part]), t[part], positions=dataset.positions
            )
    return scores


def baseline_rows(
    scores: dict[str, dict[str, float]], class_names: list[str]
) -> dict[str, dict[str, float]]:
    """Rows for a metrics table: ``"always 3 (median class)"`` -> metrics.

    Examples
    --------
    >>> baseline_rows({"most_common": {"class": 1, "mae": 0.5}}, ["a", "b"])
    {'always b (most common)': {'class': 1, 'mae': 0.5}}
    """
    labels = {"most_common": "most common", "median": "median class"}
    return {
        f"always {class_names[int(values['class'])]} ({labels.get(name, name)})": values
        for name, values in scores.items()
    }
