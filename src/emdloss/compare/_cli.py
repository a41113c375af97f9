"""The command line of ``emdloss compare`` once parsed (its flags: :mod:`emdloss._flags`): the
train options the flags carry, and :func:`run`, which hands them to
:func:`emdloss.compare.compare`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emdloss.compare._plan import dataset_slug, parse_names
from emdloss.errors import UserError
from emdloss.training.config import COMPARE_PASSTHROUGH, read_options
from emdloss.vocabulary import DEFAULT_DATASETS, DEFAULT_LOSSES, DEFAULT_OUTPUT, DEFAULT_SEEDS

__all__ = ["add_arguments", "default_output", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``emdloss compare`` to a parser: :func:`emdloss._flags.add_compare_arguments`
    (defined beside ``train``'s, from the same tables, so that building the CLI's parser
    imports none of compare's modules)."""
    from emdloss._flags import add_compare_arguments

    add_compare_arguments(parser)


def _options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Train options: the --config file, then --set KEY=VALUE, then the named flags."""
    from emdloss._yaml import load_yaml

    options: dict[str, Any] = {}
    path = getattr(args, "train_config", None)
    if path:
        options.update({str(k).replace("-", "_"): v for k, v in read_options(path).items()})
    for item in getattr(args, "train_set", []) or []:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        name = key.strip().replace("-", "_")
        # Mapping options (data_options, loss_options) are given inline: --set loss_options={alpha: 2}
        options[name] = load_yaml(text, f"--set {name}") if name.endswith("_options") else text
    for name in COMPARE_PASSTHROUGH:
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
    """Run ``emdloss compare`` from parsed arguments and print its verdict table.

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
    from emdloss.compare._summary import run_counts

    # The answer in a few lines; summary.md keeps everything (every metric and rule, baselines,
    # published results, the verdict sentences, failed runs).
    print(result.table)
    print(f"\n{run_counts(result.records)} ({result.wall_seconds:.0f} s).")
    print(f"Summary (every metric, rule, baseline and published result): {output / 'summary.md'}")
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
        plots=getattr(args, "plots", "end"),
        engine=getattr(args, "engine", "grouped"),
    )
