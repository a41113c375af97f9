"""``emdloss compare``: many losses under one protocol, with seeds, spread and published rows.

Every data set x loss x seed (x fold) is trained by :func:`emdloss.training.train` with the same
splits, model, budget and model selection; only the loss differs. The comparison writes

- ``runs/<dataset>/<loss>/seed<k>[_fold<f>]/``: each run's own directory (metrics.json, ...);
- ``results.csv``: one row per run and prediction rule;
- ``summary.md``: mean ± standard deviation per loss, the best per column in bold, the published
  rows of :mod:`emdloss.reference_results` beside ours with their protocol, and a verdict;
- ``plots/<dataset>_metrics.png`` and ``plots/<dataset>_per_class_mae.png``;
- ``compare.json``: the protocol, so that a rerun into the same directory cannot silently mix
  runs trained with different options;
- with ``conformal=ALPHA`` (``--conformal``): each run's conformal prediction sets, calibrated on
  its validation split (``calibrator.json``), with test coverage and mean set size in
  ``results.csv`` and the summary, and ``plots/<dataset>/set_size.png`` (set size against alpha).

A rerun skips finished runs (complete ``metrics.json``), resumes half-finished ones from their
last checkpoint and restarts those without one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emdloss._atomic import write_json, write_text
from emdloss.compare._lock import output_lock
from emdloss.compare._plan import (
    DEFAULT_DATASETS,
    DEFAULT_LOSSES,
    DEFAULT_SEEDS,
    EMD_LOSSES,
    PEER_PACKAGES,
    RunSpec,
    check_dataset_names,
    check_losses,
    dataset_slug,
    parse_names,
    parse_seeds,
    plan_runs,
)
from emdloss.compare._report import (
    CSV_COLUMNS,
    DatasetInfo,
    render_summary,
    result_rows,
    results_csv,
)
from emdloss.compare._runner import METRIC_KEYS, Job, RunRecord, TrainFn, build_config, run_all

__all__ = [
    "CSV_COLUMNS",
    "DATASET_DEFAULTS",
    "DEFAULT_DATASETS",
    "DEFAULT_LOSSES",
    "DEFAULT_OUTPUT",
    "DEFAULT_SEEDS",
    "EMD_LOSSES",
    "METRIC_KEYS",
    "PEER_PACKAGES",
    "CompareResult",
    "RunRecord",
    "RunSpec",
    "add_arguments",
    "compare",
    "run",
]

#: Output directory of ``emdloss compare`` without arguments.
DEFAULT_OUTPUT = Path("runs") / "compare-default"

#: Train options per data-set kind (or name) that fit the built-in budget; every loss of a data
#: set gets the same ones, and options given by the user replace them.
DATASET_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    # 20 epochs: on ERA and SWD the validation MAE stopped improving well before (checked
    # against 40 epochs and batch 32); the default's 48 runs take about 3 min on 2 cores.
    "tabular": {"model": "mlp", "epochs": 20, "batch_size": 64, "lr": 3e-3},
    "retinamnist": {"model": "cnn", "epochs": 30, "batch_size": 64, "lr": 1e-3},
}

# Options that change how a run is executed or shown, not what is trained: they may differ
# between a comparison and its resumption.
_NOT_PROTOCOL = frozenset(
    {
        "progress",
        "data_dir",
        "num_workers",
        "accelerator",
        "devices",
        "strategy",
        "num_nodes",
        "dist_timeout",
        "output",
        "resume",
        "overwrite",
    }
)
_PROTOCOL_FILE = "compare.json"


@dataclass
class CompareResult:
    """What :func:`compare` did and wrote.

    Attributes
    ----------
    output : pathlib.Path
        The comparison directory.
    records : list of RunRecord
        Every run in plan order (``status`` done, skipped or failed).
    rows : list of dict
        The rows of ``results.csv``.
    summary : str
        The text of ``summary.md``.
    files : list of pathlib.Path
        ``results.csv``, ``summary.md`` and the plots.
    wall_seconds : float
        Wall time of the whole comparison.
    """

    output: Path
    records: list[RunRecord]
    rows: list[dict[str, Any]]
    summary: str
    files: list[Path] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def failed(self) -> list[RunRecord]:
        """Runs that raised (their tracebacks are in ``<run_dir>/error.txt``)."""
        return [record for record in self.records if record.status == "failed"]


def _load_info(
    spec: str, options: Mapping[str, Any], seed: int, folds: int | None
) -> tuple[Any, dict[str, Any]]:
    """Load a data set once (so a bad name or missing file fails before any run) and resolve
    its train options: defaults for the data set (or its kind), then the user's."""
    from emdloss.data import load_dataset

    kwargs: dict[str, Any] = dict(options.get("data_options") or {})
    for key in ("target", "classes"):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    if folds is not None:
        kwargs.update(fold=0, num_folds=folds)
    dataset = load_dataset(spec, data_dir=options.get("data_dir"), seed=seed, **kwargs)
    resolved = dict(DATASET_DEFAULTS.get(spec, DATASET_DEFAULTS.get(dataset.kind, {})))
    resolved.update(options)
    return dataset, resolved


def _threads(kind: str) -> int | None:
    """Torch threads per run: one for tables, else the process's (``cores // jobs``)."""
    return 1 if kind == "tabular" else None


def _protocol(options: Mapping[str, Any], folds: int | None) -> dict[str, Any]:
    kept = {k: v for k, v in sorted(options.items()) if k not in _NOT_PROTOCOL}
    kept["num_folds"] = folds
    # Through JSON so that the comparison with the stored protocol sees the same types.
    result: dict[str, Any] = json.loads(json.dumps(kept, default=str))
    return result


def _check_protocol(output: Path, protocols: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    path = output / _PROTOCOL_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8")).get("datasets", {})
    except (OSError, ValueError):
        stored = {}
    for spec, protocol in protocols.items():
        if spec in stored and stored[spec] != protocol:
            keys = sorted(set(stored[spec]) | set(protocol))
            diff = ", ".join(
                f"{k}: {stored[spec].get(k)!r} -> {protocol.get(k)!r}"
                for k in keys
                if stored[spec].get(k) != protocol.get(k)
            )
            raise ValueError(
                f"{output} holds runs of {spec} trained with other options ({diff}); mixing them "
                "would not be a fair comparison: use another --output or the same options"
            )
    return {**stored, **protocols}


def compare(
    datasets: str | Sequence[str] = DEFAULT_DATASETS,
    losses: str | Sequence[str] = DEFAULT_LOSSES,
    seeds: int | str | Sequence[int] = DEFAULT_SEEDS,
    output: str | os.PathLike[str] = DEFAULT_OUTPUT,
    *,
    folds: int | None = None,
    jobs: int = 1,
    train_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    train_fn: TrainFn | None = None,
    mp_context: str | None = None,
    conformal: float | None = None,
    conformal_method: str = "cdf",
) -> CompareResult:
    """Train every data set x loss x seed (x fold) under one protocol and report.

    Parameters
    ----------
    datasets : str or sequence of str
        Data set specs (``"era,lev"`` or a list), as :func:`emdloss.data.load_dataset` takes.
    losses : str or sequence of str
        Loss names of :data:`emdloss.training.losses.LOSS_NAMES` (ours, baselines and peers).
    seeds : int, str or sequence of int
        A count (``3`` -> seeds 0, 1, 2) or explicit seeds.
    output : path-like
        Comparison directory; rerunning into it skips finished runs.
    folds : int, optional
        k-fold cross-validation: every seed runs every fold.
    jobs : int, default 1
        Runs in parallel (processes), each with ``cores // jobs`` torch threads.
    train_options : Mapping, optional
        :class:`emdloss.training.TrainConfig` fields shared by every run (``epochs``, ``model``,
        ``batch_size``, ``lr``, ``data_dir``, ...); they replace :data:`DATASET_DEFAULTS`.
    progress : bool, default True
        Progress bar over runs.
    train_fn : callable, optional
        ``train(config) -> RunResult`` in place of :func:`emdloss.training.train` (tests).
    mp_context : str, optional
        Start method of the worker processes when ``jobs > 1`` (default ``"spawn"``).
    conformal : float, optional
        Miscoverage level alpha: calibrate conformal prediction sets for every finished run on
        its validation split and report test coverage and mean set size per loss.
    conformal_method : {"cdf", "ordinal_aps"}
        Conformity score of those sets (see :mod:`emdloss.conformal`).

    Returns
    -------
    CompareResult

    Raises
    ------
    ValueError
        Unknown data set, loss or train option, bad seeds/folds/jobs, or an output directory
        holding runs trained with other options; raised before any run starts.
    UserError
        The output directory is in use by another comparison (names its PID); a ValueError.
    ImportError
        A peer loss whose package is missing (the message names ``emdloss[peers]``).

    Examples
    --------
    >>> compare("era", "no_such_loss", 1, "unused")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown loss 'no_such_loss'; valid losses: ...
    """
    start = time.perf_counter()
    if conformal is not None:  # checked before any run starts
        from emdloss.conformal._scores import check_alpha, check_method

        conformal, conformal_method = check_alpha(conformal), check_method(conformal_method)
    dataset_list = parse_names(datasets, "datasets")
    loss_list = parse_names(losses, "losses")
    seed_list = parse_seeds(seeds)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: expected an integer >= 1, got {jobs!r}")
    specs = plan_runs(dataset_list, loss_list, seed_list, folds)
    check_losses(loss_list)
    check_dataset_names(dataset_list)
    user = {str(k).replace("-", "_"): v for k, v in (train_options or {}).items()}
    for key in ("dataset", "loss", "seed", "output", "fold", "num_folds", "resume"):
        if key in user:
            raise ValueError(
                f"train option {key!r} is set by compare itself for every run; use the "
                "compare arguments (datasets, losses, seeds, output, folds) instead"
            )
    # compare shows its own progress bar over runs; per-run bars would interleave.
    user.setdefault("progress", False)
    out = Path(output)
    infos: list[DatasetInfo] = []
    options_by_dataset: dict[str, Mapping[str, Any]] = {}
    for spec in dataset_list:
        dataset, options = _load_info(spec, user, seed_list[0], folds)
        # Build one config per data set now: unknown options and bad values fail here, and
        # values given as strings (--set epochs=5) take the option's type (5), as stored.
        config = build_config(RunSpec(spec, loss_list[0], seed_list[0], None), out, options)
        options = {key: getattr(config, key) for key in options}
        options_by_dataset[spec] = options
        infos.append(
            DatasetInfo(
                spec=spec,
                num_classes=dataset.num_classes,
                kind=dataset.kind,
                sizes=(len(dataset.train), len(dataset.val), len(dataset.test)),
                options=_protocol(options, None),
                seeds=tuple(seed_list),
                folds=folds,
                losses=tuple(loss_list),
                class_names=tuple(dataset.class_names),
                protocol=getattr(dataset, "protocol", ""),
            )
        )
    protocols = {spec: _protocol(options_by_dataset[spec], folds) for spec in dataset_list}
    # One comparison per directory: a second one would train the same runs over this one's.
    with output_lock(out):
        merged = _check_protocol(out, protocols)
        write_json(out / _PROTOCOL_FILE, {"datasets": merged})

        # Tabular runs are overhead-bound: a second torch thread only spins. The default took
        # 5:50 with 2 threads and 2:45 with 1 on 2 cores, with identical metrics.
        kinds = {info.spec: info.kind for info in infos}
        jobs_list: list[Job] = [
            (s, out / s.relative_dir, options_by_dataset[s.dataset], _threads(kinds[s.dataset]))
            for s in specs
        ]
        records = run_all(
            jobs_list, jobs=jobs, train_fn=train_fn, progress=progress, mp_context=mp_context
        )
        rows = result_rows(records)
        section = ""
        conformal_files: list[Path] = []
        if conformal is not None:
            from emdloss.compare import _conformal

            calibrations = _conformal.calibrate_records(records, conformal, conformal_method)
            _conformal.add_conformal_columns(rows, records, calibrations)
            section = _conformal.conformal_section(
                records, calibrations, infos, conformal, conformal_method
            )
            conformal_files = _conformal.plot_set_sizes(out, records, calibrations, infos)
        files = [write_text(out / "results.csv", results_csv(rows))]
        from emdloss.compare._plots import write_plots  # numpy, matplotlib: only when drawing

        files += write_plots(out, records, rows, infos) + conformal_files
        summary = render_summary(records, infos, output=str(out))
        if section:
            summary = summary.rstrip("\n") + "\n\n" + section
        files.append(write_text(out / "summary.md", summary))
        return CompareResult(out, records, rows, summary, files, time.perf_counter() - start)


# ---------------------------------------------------------------------------- command line
_PASSTHROUGH: tuple[tuple[str, type, str], ...] = (
    ("--epochs", int, "training epochs of every run"),
    ("--model", str, "model name (default: mlp for tables, cnn for images)"),
    ("--batch-size", int, "mini-batch size"),
    ("--lr", float, "learning rate"),
    ("--data-dir", str, "directory of data files (else EMDLOSS_DATA, else a per-user cache)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``emdloss compare`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``compare`` sub-command's parser.

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> add_arguments(p)
    >>> p.parse_args(["--losses", "ce,emd2", "--seeds", "2", "--epochs", "3"]).epochs
    3
    """
    parser.add_argument(
        "--dataset",
        "--datasets",
        dest="datasets",
        metavar="NAME[,NAME...]",
        help=f"data sets (default: {','.join(DEFAULT_DATASETS)}); retinamnist, era, esl, esl6, "
        "lev, swd, digits, csv:PATH, folder:PATH, ...",
    )
    parser.add_argument(
        "--losses",
        metavar="A,B,...",
        help=f"losses to compare (default: {','.join(DEFAULT_LOSSES)})",
    )
    parser.add_argument(
        "--seeds",
        metavar="N|S1,S2,...",
        help=f"a count N (seeds 0..N-1) or a comma-separated list (default: {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        help=f"comparison directory (default: {DEFAULT_OUTPUT} for the built-in default, else "
        "runs/compare-<datasets>); rerunning into it skips finished runs",
    )
    parser.add_argument("--folds", type=int, metavar="K", help="k-fold cross-validation per seed")
    parser.add_argument("--jobs", type=int, default=1, metavar="J", help="runs in parallel")
    group = parser.add_argument_group("train options (the same for every run)")
    for flag, kind, text in _PASSTHROUGH:
        group.add_argument(flag, type=kind, default=None, help=text)
    group.add_argument(
        "--config",
        dest="train_config",
        metavar="FILE",
        help="YAML file of train options (the keys of `emdloss train --config`); flags override",
    )
    group.add_argument(
        "--set",
        dest="train_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other option of `emdloss train` (repeatable), e.g. --set monitor=qwk",
    )
    parser.add_argument(
        "--conformal",
        type=float,
        metavar="ALPHA",
        help="also calibrate conformal prediction sets (validation split) for every run and "
        "report test coverage and mean set size per loss, e.g. 0.1 (see docs/conformal.md)",
    )
    parser.add_argument(
        "--conformal-method",
        choices=("cdf", "ordinal_aps"),
        default="cdf",
        help="conformity score of --conformal (default cdf)",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )


def _options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Train options: the --config file, then --set KEY=VALUE, then the named flags."""
    import yaml

    options: dict[str, Any] = {}
    path = getattr(args, "train_config", None)
    if path:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"config file not found: {file}")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"config file {file} is not valid YAML: {error}") from None
        if not isinstance(loaded, Mapping):
            raise ValueError(f"config file {file} must hold a mapping of options at top level")
        options.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    for item in getattr(args, "train_set", []) or []:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        name = key.strip().replace("-", "_")
        # Mapping options (data_options, loss_options) are given inline: --set loss_options={alpha: 2}
        options[name] = yaml.safe_load(text) if name.endswith("_options") else text
    for flag, _, _ in _PASSTHROUGH:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    return options


def default_output(datasets: Sequence[str]) -> Path:
    """Output directory used when ``--output`` is not given.

    Examples
    --------
    >>> default_output(["era", "esl", "lev", "swd"]).as_posix()
    'runs/compare-default'
    >>> default_output(["retinamnist"]).as_posix()
    'runs/compare-retinamnist'
    """
    if tuple(datasets) == DEFAULT_DATASETS:
        return DEFAULT_OUTPUT
    return Path("runs") / ("compare-" + "-".join(dataset_slug(d) for d in datasets))


def run(args: argparse.Namespace) -> int:
    """Run ``emdloss compare`` from parsed arguments and print the summary.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by a parser set up with :func:`add_arguments`.

    Returns
    -------
    int
        0 when every run finished, 1 when some failed (the summary lists them).
    """
    datasets = parse_names(args.datasets, "datasets") if args.datasets else DEFAULT_DATASETS
    output = Path(args.output) if args.output else default_output(datasets)
    result = compare(
        datasets,
        args.losses or DEFAULT_LOSSES,
        args.seeds if args.seeds is not None else DEFAULT_SEEDS,
        output,
        folds=args.folds,
        jobs=args.jobs,
        train_options=_options_from_args(args),
        progress=getattr(args, "progress", True),
        conformal=getattr(args, "conformal", None),
        conformal_method=getattr(args, "conformal_method", "cdf"),
    )
    print(result.summary)
    print(f"Wrote {', '.join(str(p) for p in result.files)} ({result.wall_seconds:.0f} s).")
    return 1 if result.failed else 0
