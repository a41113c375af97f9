"""The names emdloss's layers share, each stated once: losses, prediction rules, metrics with
their direction, conformity scores, loss implementations, and compare's policies.

Imports nothing (not even torch), so that the command line's parser and help, the training
config, the metrics, the decoders and ``compare`` read the same tuples. A new loss, rule, metric
or method is added here first; see docs/architecture.md ("Where to add ..."). The defaults of
``emdloss compare`` are here too, so that its ``--help`` needs none of its modules.

Examples
--------
>>> "emd2" in LOSS_NAMES, RULES[0], METRIC_MODES["qwk"], "mae" in HIGHER_IS_BETTER
(True, 'argmax', 'max', False)
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CONFORMAL_METHODS",
    "DEFAULT_DATASETS",
    "DEFAULT_LOSSES",
    "DEFAULT_OUTPUT",
    "DEFAULT_SEEDS",
    "DISTRIBUTION_LOSS_NAMES",
    "DISTRIBUTION_METRIC_MODES",
    "ENGINES",
    "EXECUTORS",
    "HIGHER_IS_BETTER",
    "IMPLEMENTATIONS",
    "LOSS_NAMES",
    "METRICS",
    "METRIC_MODES",
    "OUR_LOSS_NAMES",
    "PEER_LOSS_NAMES",
    "REPORTED_METRICS",
    "RULES",
    "SELECT_MODES",
    "SOFT_TARGET_POLICIES",
]

# ---------------------------------------------------------------------------- losses
#: Losses implemented by emdloss (plus the cross-entropy and L2 baselines).
OUR_LOSS_NAMES: tuple[str, ...] = ("ce", "emd2", "w1", "xemd1", "xemd2", "ground", "l2", "nima")
#: Losses taken from peer packages (``pip install 'emdloss[peers]'``).
PEER_LOSS_NAMES: tuple[str, ...] = ("dlordinal_emd", "triangular", "sord", "corn", "coral")
#: Every valid ``loss`` name of the training registry (:mod:`emdloss.training.losses`).
LOSS_NAMES: tuple[str, ...] = OUR_LOSS_NAMES + PEER_LOSS_NAMES
#: The losses that take a distribution target (N, C) (``TrainingLoss.supports_soft_targets``;
#: ``tests/training/test_distribution_targets.py`` checks this list against the registry).
DISTRIBUTION_LOSS_NAMES: tuple[str, ...] = (
    "ce",
    "emd2",
    "w1",
    "xemd1",
    "xemd2",
    "ground",
    "l2",
    "nima",
    "dlordinal_emd",
)
#: The keys of :func:`emdloss.metrics.distribution_metrics` in order, and whether a larger value
#: is better (``"max"``) or worse (``"min"``): the one table of the distribution measures'
#: names, and what a run on distribution targets can select on.
DISTRIBUTION_METRIC_MODES: dict[str, str] = {
    "chebyshev": "min",
    "clark": "min",
    "canberra": "min",
    "kl": "min",
    "cosine": "max",
    "intersection": "max",
    "emd2": "min",
    "nima_emd": "min",
    "mean_mae": "min",
    "mean_rmse": "min",
    "lcc": "max",
    "srcc": "max",
    "mode_accuracy": "max",
}

#: Implementations of the EMD losses (:func:`emdloss._ordinal.implementation`).
IMPLEMENTATIONS: tuple[str, ...] = ("fused", "cpp", "library", "reference")

# ---------------------------------------------------------------------------- decoding
#: Prediction rules of :func:`emdloss.decoding.decode`, in the order runs report them.
RULES: tuple[str, ...] = ("argmax", "median", "expected", "bayes")

# ---------------------------------------------------------------------------- metrics
#: The metrics of :class:`emdloss.metrics.OrdinalMetrics`, in the order every table shows
#: them, and whether a larger value is better (``"max"``) or worse (``"min"``).
METRICS: dict[str, str] = {
    "accuracy": "max",
    "one_off_accuracy": "max",
    "mae": "min",
    "rmse": "min",
    "qwk": "max",
    "rps": "min",
    "amae": "min",
    "spearman": "max",
}
#: The metrics in result tables (the CLI's, ``results.csv``, ``summary.md``): all but
#: ``spearman``, which runs record in ``metrics.json`` only.
REPORTED_METRICS: tuple[str, ...] = tuple(name for name in METRICS if name != "spearman")
#: What model selection may monitor (``--monitor``): a metric or the validation loss.
METRIC_MODES: dict[str, str] = {**METRICS, "loss": "min"}
#: What ``compare --select`` chooses grid settings on, with its direction: a reported metric
#: (under the runs' ``monitor_rule``), or, on data with distribution targets, a measure of the
#: predicted distribution (:data:`DISTRIBUTION_METRIC_MODES`; no names are shared).
SELECT_MODES: dict[str, str] = {
    **{name: METRICS[name] for name in REPORTED_METRICS},
    **DISTRIBUTION_METRIC_MODES,
}
#: The metrics and distribution measures where larger is better.
HIGHER_IS_BETTER: frozenset[str] = frozenset(
    name for name, mode in {**METRIC_MODES, **DISTRIBUTION_METRIC_MODES}.items() if mode == "max"
)

# ---------------------------------------------------------------------------- conformal
#: Conformity scores of :func:`emdloss.conformal.calibrate`; the first is the default.
CONFORMAL_METHODS: tuple[str, ...] = ("cdf", "ordinal_aps")

# ---------------------------------------------------------------------------- compare
#: What ``compare`` does when the data has soft targets and some loss can use only labels.
SOFT_TARGET_POLICIES: tuple[str, ...] = ("refuse", "hard-for-all")
#: ``compare --plots``: the figures of the runs, each choice with what it draws (the first is
#: the default). The comparison's own figures (metrics, paired differences, per-class MAE)
#: are drawn under every choice; a run's own figures are also ``emdloss plot RUN_DIR``.
RUN_PLOTS: dict[str, str] = {
    "end": "per data set, one figure of the losses' confusion matrices and one of the runs' "
    "learning curves (and on distribution targets one of a few test items' true and predicted "
    "histograms), drawn when the runs are done",
    "runs": "as end, and each reported run's own figures (learning curves, confusion matrix, "
    "distributions, ground distance) in its directory",
    "none": "no figure of the runs",
    "each": "as end, and each run's own figures drawn by the run as it ends (the slowest)",
}
#: Where ``compare`` runs its runs: local processes or Ray tasks.
EXECUTORS: tuple[str, ...] = ("local", "ray")
#: How ``compare`` trains its runs: runs that share a shape as one vectorised model
#: (:mod:`emdloss.training.grouped`; the default), or one at a time.
ENGINES: tuple[str, ...] = ("grouped", "per-run")
#: ``compare``'s built-in default: TOC-UCO's tabular benchmarks shipped with ``skordinal``;
#: ESL in its 6-class regrouping (``esl6``), the grouping TOC-UCO's published rows use.
DEFAULT_DATASETS: tuple[str, ...] = ("era", "esl6", "lev", "swd")
#: Cross-entropy, our exact squared EMD, the learned ground distance recipe, L2 regression.
DEFAULT_LOSSES: tuple[str, ...] = ("ce", "emd2", "xemd1", "l2")
#: Seeds 0, 1, 2.
DEFAULT_SEEDS = 3
#: Output directory of ``emdloss compare`` without arguments.
DEFAULT_OUTPUT = Path("runs") / "compare-default"
