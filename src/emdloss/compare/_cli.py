"""The command line of ``emdloss compare``: its options, the train options they carry and
:func:`run`, which hands them to :func:`emdloss.compare.compare`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emdloss.compare._plan import (
    DEFAULT_DATASETS,
    DEFAULT_LOSSES,
    DEFAULT_OUTPUT,
    DEFAULT_SEEDS,
    SOFT_TARGET_POLICIES,
    dataset_slug,
    parse_names,
)
from emdloss.compare._records import METRIC_KEYS
from emdloss.compare._runner import ENGINES, EXECUTORS

__all__ = ["add_arguments", "default_output", "run"]

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
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="repeatable: every loss runs every combination on every seed (lr, weight_decay, "
        "epochs, loss_options.KEY, ...); per loss the best mean validation --select wins",
    )
    parser.add_argument(
        "--select",
        choices=METRIC_KEYS,
        default=None,
        help="validation metric that chooses grid settings and validated rules (default: the "
        "runs' monitor, mae)",
    )
    parser.add_argument(
        "--no-baselines",
        dest="baselines",
        action="store_false",
        help="leave out the baselines (class prior; logistic and ordinal logit on tables)",
    )
    parser.add_argument(
        "--soft-targets",
        choices=SOFT_TARGET_POLICIES,
        default="refuse",
        help="data with soft targets and a loss that cannot use them: refuse (default) or train "
        "every loss on the hard labels",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local processes (--jobs) or Ray tasks (pip install 'emdloss[ray]')",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="grouped",
        help="grouped (default): runs that share a shape train as one vectorised model, the "
        "others alone (compare says which and why); per-run: every run alone",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="Ray cluster to join with --executor ray (default: start a local one, 2 CPUs)",
    )
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
    from emdloss._yaml import load_yaml

    options: dict[str, Any] = {}
    path = getattr(args, "train_config", None)
    if path:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"config file not found: {file}")
        loaded = load_yaml(file.read_text(encoding="utf-8"), f"config file {file}") or {}
        if not isinstance(loaded, Mapping):
            raise ValueError(f"config file {file} must hold a mapping of options at top level")
        options.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    for item in getattr(args, "train_set", []) or []:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        name = key.strip().replace("-", "_")
        # Mapping options (data_options, loss_options) are given inline: --set loss_options={alpha: 2}
        options[name] = load_yaml(text, f"--set {name}") if name.endswith("_options") else text
    for flag, _, _ in _PASSTHROUGH:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    # train's data flags (added by the CLI from train's own definitions)
    for name in ("target", "classes"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    pairs = getattr(args, "data_options", None)
    if pairs:
        options["data_options"] = {**dict(options.get("data_options") or {}), **dict(pairs)}
    return options


def default_output(datasets: Sequence[str]) -> Path:
    """Output directory used when ``--output`` is not given.

    Examples
    --------
    >>> default_output(["era", "esl6", "lev", "swd"]).as_posix()
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
    # Looked up at call time, so that a patched emdloss.compare._compare.compare is used.
    from emdloss.compare import _compare
    from emdloss.errors import RunInterrupted

    try:
        result = _run_compare(_compare, args, datasets, output)
    except KeyboardInterrupt:
        raise RunInterrupted(
            f"compare into {output} stopped; finished runs are kept and the interrupted ones "
            "resume from their last epoch: run the same command again"
        ) from None
    print(result.summary)
    print(f"Wrote {', '.join(str(p) for p in result.files)} ({result.wall_seconds:.0f} s).")
    return 1 if result.failed else 0


def _run_compare(module: Any, args: argparse.Namespace, datasets: Any, output: Path) -> Any:
    return module.compare(
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
        grid=getattr(args, "grid", None) or (),
        select=getattr(args, "select", None),
        baselines=getattr(args, "baselines", True),
        soft_targets=getattr(args, "soft_targets", "refuse"),
        executor=getattr(args, "executor", "local"),
        ray_address=getattr(args, "ray_address", None),
        engine=getattr(args, "engine", "grouped"),
    )
