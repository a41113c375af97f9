"""The argument parser of the ``emdloss`` command (:func:`emdloss.cli.build_parser`).

Split from :mod:`emdloss.cli` by job: this module builds the parser, :mod:`emdloss._cli_commands`
runs the commands, :mod:`emdloss.cli` turns errors into exit codes. Building the parser imports
neither torch nor Lightning, so ``emdloss --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from typing import Any

#: What the commands need beyond torch and numpy: module -> why, all from the ``train`` extra.
_TRAIN_MODULES = ("yaml", "lightning", "torchmetrics")
_TRAIN_EXTRA = "pip install 'emdloss[train]'"

#: Conformity scores of ``emdloss calibrate`` (emdloss.conformal.METHODS, spelled out here so
#: that building the parser does not import torch).
_CONFORMAL_METHODS = ("cdf", "ordinal_aps")


def _missing_train_modules() -> list[str]:
    """Modules of the ``train`` extra that are not installed (found without importing them)."""
    return [name for name in _TRAIN_MODULES if importlib.util.find_spec(name) is None]


_HELP = {
    "dataset": "retinamnist, era, esl, esl6, lev, swd, adience, csv:PATH, folder:PATH, images:PATH",
    "output": "run directory (default runs/<dataset>-<loss>-seed<seed>)",
    "loss": "training loss (see `emdloss train --help` epilog for the list)",
    "model": "network: mlp, cnn, resnet18, ... (default mlp for tables, cnn for small images)",
    "epochs": "training epochs",
    "seed": "random seed (splits, initialisation, shuffling)",
    "batch_size": "mini-batch size per process",
    "data_dir": "directory of data files (else $EMDLOSS_DATA, else a per-user cache)",
    "target": "target column of a CSV data set",
    "classes": "class names in order, comma-separated (CSV and image folders)",
    "data_options": "data option KEY=VALUE (repeatable): for CSV files ignore=, features=, "
    "categorical=, missing=, bins=, ... (listed below), for every source val_fraction=, "
    "test_fraction=, limit=",
    "soft_targets": "train on the data's soft target distributions where it has them",
    "fold": "test fold of k-fold cross-validation",
    "num_folds": "number of folds",
    "pretrained": "start backbones from ImageNet weights in the local torch cache",
    "model_options": "further model option KEY=VALUE (repeatable), e.g. dropout=0.2",
    "loss_options": "further loss option KEY=VALUE (repeatable), e.g. mu=0.25",
    "ground_matrix": "ground-distance matrix file (.npy, .csv, .txt) for --loss ground",
    "ground_power": "power p of the default ground distance |x_i - x_j|^p",
    "warmup_epochs": "recipe: epochs of cross-entropy before the EMD term",
    "ce_weight": "recipe: weight of cross-entropy",
    "emd_weight": "recipe: weight of the EMD term",
    "optimizer": "adamw or sgd (SGD with Nesterov momentum)",
    "lr": "learning rate",
    "momentum": "SGD momentum (the paper: 0.98)",
    "weight_decay": "weight decay",
    "scheduler": "learning-rate schedule: exponential, cosine or none",
    "lr_decay": "factor per epoch of the exponential schedule (the paper: 0.995)",
    "monitor": "validation metric for model selection (mae, qwk, accuracy, rps, loss, ...)",
    "monitor_rule": "prediction rule of the monitored metric",
    "tta": "mirror test-time augmentation for images",
    "evaluate_test": "evaluate the best checkpoint on the test split when training ends "
    "(--no-evaluate-test leaves it unread, as compare --grid does until it has chosen)",
    "limit_train": "use at most N training samples (stratified)",
    "limit_val": "use at most N validation samples (stratified)",
    "limit_test": "use at most N test samples (stratified)",
    "num_workers": "data-loader worker processes",
    "threads": "intra-op torch threads (default 1 for mlp and cnn, torch's default otherwise)",
    "accelerator": "cpu, gpu, mps or auto",
    "devices": "devices (processes) per node: a count, a list like 0,1, or auto",
    "strategy": "auto, ddp, ddp_spawn, ... (Lightning strategies)",
    "num_nodes": "number of machines",
    "dist_timeout": "seconds a DDP process waits for the others before stopping the run "
    "(default 300)",
    "precision": "32-true, 16-mixed, bf16-mixed, ...",
    "deterministic": "deterministic algorithms",
    "implementation": "EMD loss implementation: fused (PyTorch) or cpp (C++ CPU kernel); "
    "recorded in config.yaml and reused on resume",
    "progress": "progress bars",
    "resume": "continue the run in --output from checkpoints/last.ckpt",
    "overwrite": "replace an existing run in --output",
}
_DATA_OPTIONS_EPILOG = """\
CSV files (--dataset csv:PATH --target COLUMN) take these --data-option KEY=VALUE:
  ignore=A,B              columns to leave out (identifiers, scores the target is made from)
  features=A,B            use only these columns as features
  categorical=A,B         one-hot these columns even if they hold numbers (integer codes)
  missing=error|drop|impute
                          empty or NA cells: refuse (default), drop the row, or impute
  classes=A,B,C           the class order of a non-numeric target
  bins=K, bin_edges=E1,E2, binning=uniform|quantile
                          cut a continuous target into classes
  delimiter=;             field separator (default ,)
every source: val_fraction=0.1, test_fraction=0.3 (shares of the split), limit=N

train prints the columns it uses, the class order, the split sizes and warnings
(identifier, leak, integer codes, constant column, small validation split) first.

example:
  emdloss train --dataset csv:wine.csv --target rating \\
      --data-option ignore=rownames,response --data-option categorical=judge,bottle
"""

_DICT_FLAGS = {"data_options": "data-option", "model_options": "model-option"}
_DICT_FLAGS["loss_options"] = "loss-option"


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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs keep their line breaks; an option's default follows its help unless the help
    already states it or there is none to state (None, an empty list, an on/off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text
            or default is None
            or default is argparse.SUPPRESS
            or default == []
            or isinstance(action, argparse._StoreConstAction)  # store_true/false: obvious
        ):
            return action.help
        return f"{text} (default: %(default)s)"


def _default_text(name: str) -> str:
    """`` (default: X)`` for a field of TrainConfig, empty when its help already says it."""
    import dataclasses

    from emdloss.training.config import TrainConfig

    if "default" in _HELP.get(name, ""):
        return ""
    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:  # pragma: no cover - every option has a default
        return ""
    if value is None or value == {}:
        return " (default: none)"
    if isinstance(value, bool):
        return f" (default: {'on' if value else 'off'})"
    return f" (default: {value})"


#: train's data flags that ``compare`` shares (the same definitions, added by
#: :func:`_add_train_arguments`).
DATA_FLAGS = ("target", "classes", "data_options")


def _add_train_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, names: Sequence[str] | None = None
) -> None:
    """Add train's option flags (all, or only ``names`` without ``--config``) to a parser."""
    from emdloss.training.config import TrainConfig

    if names is None:
        parser.add_argument("--config", metavar="FILE", help="YAML file of options (keys = flags)")
    from emdloss.training.config import BOOL_FIELDS

    bools = BOOL_FIELDS
    for name in TrainConfig.field_names() if names is None else names:
        flag = "--" + name.replace("_", "-")
        # The defaults are written out: the flags default to SUPPRESS (so that a --config file
        # or a resumed run is not overridden), which argparse's formatter does not show.
        help_text = _HELP.get(name, "") + _default_text(name)
        if name in bools:
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif name in _DICT_FLAGS:
            parser.add_argument(
                "--" + _DICT_FLAGS[name],
                flag,
                dest=name,
                action="append",
                type=_key_value,
                default=argparse.SUPPRESS,
                metavar="KEY=VALUE",
                help=help_text,
            )
        else:
            metavar = {"classes": "A,B,C"}.get(name, name.upper())
            parser.add_argument(
                flag, dest=name, default=argparse.SUPPRESS, metavar=metavar, help=help_text
            )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``emdloss`` command.

    Examples
    --------
    >>> args = build_parser().parse_args(["train", "--loss", "w1", "--epochs", "3"])
    >>> args.command, args.loss, args.epochs
    ('train', 'w1', '3')
    """
    from emdloss import __version__

    missing = _missing_train_modules()
    parser = argparse.ArgumentParser(
        prog="emdloss",
        allow_abbrev=False,
        formatter_class=_HelpFormatter,
        description="Train and compare networks on ordered classes with the squared EMD loss.",
        epilog=(
            f"The commands need the train extra ({', '.join(missing)} missing): {_TRAIN_EXTRA}"
            if missing
            else None
        ),
    )
    parser.add_argument("--version", action="version", version=f"emdloss {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of every error, user errors too"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    from emdloss.training import LOSS_NAMES

    # No abbreviations (--epoch must not silently mean --epochs); defaults in every --help.
    sub: dict[str, Any] = {"allow_abbrev": False, "formatter_class": _HelpFormatter}
    train = commands.add_parser(
        "train",
        help="train one network and write a run directory",
        description="Train one network, select it on validation data, test it once.",
        epilog="losses: " + ", ".join(LOSS_NAMES) + "\n\n" + _DATA_OPTIONS_EPILOG,
        **sub,
    )
    _add_train_arguments(train)

    evaluate = commands.add_parser(
        "evaluate",
        help="re-evaluate the best checkpoint of a run (writes nothing)",
        description="Re-evaluate the best checkpoint of a run on its validation and test data.",
        **sub,
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--data-dir", help="where the data lives now")
    evaluate.add_argument("--accelerator", help="override the run's accelerator, e.g. cpu")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars"
    )

    calibrate = commands.add_parser(
        "calibrate",
        help="conformal prediction sets for a run (stored in the run directory)",
        description=(
            "Calibrate contiguous prediction sets that hold the true class with probability\n"
            ">= 1 - alpha (split conformal, marginal over examples; see docs/conformal.md).\n"
            "Writes RUN_DIR/calibrator.json and adds test coverage and mean set size to\n"
            "metrics.json; evaluate and predict then use it."
        ),
        **sub,
    )
    calibrate.add_argument("run_dir", metavar="RUN_DIR")
    calibrate.add_argument("--alpha", type=float, default=0.1, help="miscoverage level in (0, 1)")
    calibrate.add_argument(
        "--method",
        choices=_CONFORMAL_METHODS,
        default=_CONFORMAL_METHODS[0],
        help="conformity score: cdf (median-centred CDF interval) or ordinal_aps",
    )
    calibrate.add_argument(
        "--split",
        choices=("val", "test"),
        default="val",
        help="calibration split; the sets are assessed on the other one",
    )
    calibrate.add_argument("--data-dir", help="where the data lives now")
    calibrate.add_argument("--accelerator", help="override the run's accelerator, e.g. cpu")
    calibrate.add_argument("--json", action="store_true", help="print the record as JSON")
    calibrate.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=False, help="progress bars"
    )

    predict = commands.add_parser(
        "predict",
        help="predict classes of images or CSV rows with a trained run",
        description="Predict with the best checkpoint of a run; CSV on stdout or --output.",
        **sub,
    )
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument(
        "inputs", nargs="+", metavar="INPUTS", help="image files/folders or CSV files"
    )
    predict.add_argument("--output", "-o", help="write the predictions CSV here")
    predict.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output file"
    )

    export = commands.add_parser(
        "export",
        help="export a trained run to ONNX (preprocessing and prediction rule inside)",
        description=(
            "Write the best checkpoint of a run as an ONNX graph that takes raw inputs and "
            "outputs class probabilities and the predicted class, plus a JSON sidecar "
            "(<output>.json) with the class names and the input schema."
        ),
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    export.add_argument("--output", "-o", required=True, help="the file to write, e.g. model.onnx")
    export.add_argument("--rule", help="prediction rule of the label output (default: the run's)")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    export.add_argument(
        "--overwrite", action="store_true", help="replace existing --output and sidecar files"
    )

    compare = commands.add_parser(
        "compare",
        help="run many losses x seeds under one protocol and summarise",
        description="Compare losses under one protocol (see docs/results.md).",
        **sub,
    )
    # The compare package itself is light (it imports its training parts when it runs).
    from emdloss import compare as compare_module

    compare_module.add_arguments(compare)
    _add_train_arguments(compare.add_argument_group("data options (as for train)"), DATA_FLAGS)
    for command in (train, evaluate, predict, compare):
        # So that main() can answer an unknown option with this command's usage.
        command.set_defaults(_parser=command)

    build_kernel = commands.add_parser(
        "build-kernel",
        help="compile the optional C++ CPU kernel of squared_emd (once per machine)",
        description=(
            "Compile the C++ CPU kernel of squared_emd for this machine (-march=native) into "
            "the torch extensions cache, so that runs that ask for it (EMDLOSS_CPU_KERNEL=1) "
            "start without compiling. Needs a C++ compiler and ninja (emdloss[cpu-kernel])."
        ),
    )
    build_kernel.add_argument("--verbose", action="store_true", help="show the compiler output")
    return parser
