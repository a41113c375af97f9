"""The command-line flags generated from the option tables, without torch.

``emdloss train``'s flags come from the fields of :class:`emdloss.training.TrainConfig` (their
help text, flag, metavar and default, stated once in :mod:`emdloss.training.config`);
``emdloss compare``'s are its own plus the train options it passes through (marked in the same
table). The CLI's parser (:mod:`emdloss._cli_parser`) and :func:`emdloss.compare.add_arguments`
both read this module, so building the parser imports neither torch nor compare's modules.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from emdloss.training.config import (
    BOOL_FIELDS,
    COMPARE_DATA_FLAGS,
    COMPARE_PASSTHROUGH,
    MAPPING_OPTIONS,
    OPTIONS,
)
from emdloss.vocabulary import (
    CONFORMAL_METHODS,
    DEFAULT_DATASETS,
    DEFAULT_LOSSES,
    DEFAULT_OUTPUT,
    DEFAULT_SEEDS,
    ENGINES,
    EXECUTORS,
    RUN_PLOTS,
    SELECT_MODES,
    SOFT_TARGET_POLICIES,
)

__all__ = ["add_compare_arguments", "add_train_arguments"]

_ARGPARSE_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        import yaml  # noqa: F401 - only whether it is installed
    except ImportError:  # a minimal install: the value stays a string
        return key.strip().replace("-", "_"), value
    from emdloss._yaml import UnsafeYAMLError, load_yaml
    from emdloss.errors import UserError

    try:
        parsed = load_yaml(value, f"{key.strip()}={value[:40]}") if value.strip() else ""
    except UnsafeYAMLError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    except UserError:  # not YAML: the value is the text itself
        parsed = value
    return key.strip().replace("-", "_"), parsed


def _default_text(name: str) -> str:
    """`` (default: X)`` for an option, empty when its help already says it."""
    option = OPTIONS[name]
    if "default" in option.metadata["help"]:
        return ""
    if option.default_factory is not dataclasses.MISSING:
        value = option.default_factory()
    else:
        value = option.default
    if value is None or value == {}:
        return " (default: none)"
    if isinstance(value, bool):
        return f" (default: {'on' if value else 'off'})"
    return f" (default: {value})"


def add_train_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, names: Sequence[str] | None = None
) -> None:
    """Add train's option flags (all, with ``--config``, or only ``names``) to a parser.

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> add_train_arguments(p, ["lr", "tta", "data_options"])
    >>> vars(p.parse_args(["--lr", "0.1", "--no-tta", "--data-option", "limit=5"]))
    {'lr': '0.1', 'tta': False, 'data_options': [('limit', 5)]}
    """
    if names is None:
        parser.add_argument("--config", metavar="FILE", help="YAML file of options (keys = flags)")
    for name in OPTIONS if names is None else names:
        metadata = OPTIONS[name].metadata
        # The defaults are written out: the flags default to SUPPRESS (so that a --config file
        # or a resumed run is not overridden), which argparse's formatter does not show.
        help_text = metadata["help"] + _default_text(name)
        if name in BOOL_FIELDS:
            parser.add_argument(
                _flag(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif name in MAPPING_OPTIONS:
            parser.add_argument(
                "--" + metadata["flag"],
                _flag(name),
                dest=name,
                action="append",
                type=_key_value,
                default=argparse.SUPPRESS,
                metavar="KEY=VALUE",
                help=help_text,
            )
        else:
            parser.add_argument(
                _flag(name),
                dest=name,
                default=argparse.SUPPRESS,
                metavar=metadata["metavar"] or name.upper(),
                help=help_text,
            )


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``emdloss compare`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``compare`` sub-command's parser.

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> add_compare_arguments(p)
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
        choices=tuple(SELECT_MODES),
        default=None,
        help="validation metric that chooses grid settings (and the baselines' settings and "
        "validated rules): a reported metric, or on distribution targets a distribution "
        "measure (kl, emd2, cosine, ...); default: the runs' distribution_monitor (kl) on "
        "distribution targets, else their monitor (mae)",
    )
    parser.add_argument(
        "--no-baselines",
        dest="baselines",
        action="store_false",
        help="leave out the baselines (class prior; logistic and ordinal logit on tables; the "
        "LDL baselines on distribution targets)",
    )
    parser.add_argument(
        "--soft-targets",
        choices=SOFT_TARGET_POLICIES,
        default="refuse",
        help="data with soft targets and a loss that cannot use them: refuse (default) or train "
        "every loss on the hard labels",
    )
    parser.add_argument(
        "--plots",
        choices=RUN_PLOTS,
        default=next(iter(RUN_PLOTS)),
        help="figures of the runs: "
        + "; ".join(f"{choice}: {what}" for choice, what in RUN_PLOTS.items())
        + " (default: end). A run's own figures any time: emdloss plot RUN_DIR",
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
        default=ENGINES[0],
        help="grouped (default): runs that share a shape train as one vectorised model, the "
        "others alone (compare says which and why); per-run: every run alone",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="Ray cluster to join with --executor ray (default: start a local one, 2 CPUs)",
    )
    group = parser.add_argument_group("train options (the same for every run)")
    for name in COMPARE_PASSTHROUGH:
        option = OPTIONS[name]
        kind = _ARGPARSE_TYPES[option.type.removesuffix(" | None")]
        group.add_argument(
            _flag(name),
            type=kind,
            default=None,
            metavar=option.metadata["metavar"],
            help=option.metadata["compare"],
        )
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
        choices=CONFORMAL_METHODS,
        default=CONFORMAL_METHODS[0],
        help="conformity score of --conformal (default cdf)",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    data = parser.add_argument_group("data options (as for train)")
    add_train_arguments(data, COMPARE_DATA_FLAGS)
