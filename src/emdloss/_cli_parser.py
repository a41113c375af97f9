"""The argument parser of the ``emdloss`` command (:func:`emdloss.cli.build_parser`).

Split from :mod:`emdloss.cli` by job: this module builds the parser, :mod:`emdloss._cli_commands`
runs the commands, :mod:`emdloss.cli` turns errors into exit codes. Building the parser imports
neither torch nor Lightning, so ``emdloss --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from emdloss._flags import add_compare_arguments, add_train_arguments
from emdloss.vocabulary import CONFORMAL_METHODS

#: What the commands need beyond torch and numpy: module -> why, all from the ``train`` extra.
_TRAIN_MODULES = ("yaml", "lightning", "torchmetrics")
_TRAIN_EXTRA = "pip install 'emdloss[train]'"

#: ``--data-dir`` of the commands that read a finished run's data again.
DATA_DIR_HELP = (
    "where the data lives now: a built-in data set's directory, or the folder that a run's "
    "csv:, ldl:, images: or folder: data moved to (found by its name; checked against data.json)"
)


def _missing_train_modules() -> list[str]:
    """Modules of the ``train`` extra that are not installed (found without importing them)."""
    return [name for name in _TRAIN_MODULES if importlib.util.find_spec(name) is None]


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
  count_columns=votes_    distribution targets (vote counts or proportions) instead of
                          --target: a column prefix or a list (also for images:PATH)
  split_column=split      the official train/val/test column, used when present (none: ignore)
every source: val_fraction=0.1, test_fraction=F (shares of the split; 0.3 for tables,
  0.2 for ldl: and images:), limit=N

train prints the columns it uses, the class order, the split sizes and warnings
(identifier, leak, integer codes, constant column, small validation split) first.

example:
  emdloss train --dataset csv:wine.csv --target rating \\
      --data-option ignore=rownames,response --data-option categorical=judge,bottle
"""


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

    from emdloss.vocabulary import LOSS_NAMES

    # No abbreviations (--epoch must not silently mean --epochs); defaults in every --help.
    sub: dict[str, Any] = {"allow_abbrev": False, "formatter_class": _HelpFormatter}
    train = commands.add_parser(
        "train",
        help="train one network and write a run directory",
        description="Train one network, select it on validation data, test it once.",
        epilog="losses: " + ", ".join(LOSS_NAMES) + "\n\n" + _DATA_OPTIONS_EPILOG,
        **sub,
    )
    add_train_arguments(train)

    evaluate = commands.add_parser(
        "evaluate",
        help="re-evaluate the best checkpoint of a run (writes nothing)",
        description="Re-evaluate the best checkpoint of a run on its validation and test data.",
        **sub,
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--data-dir", help=DATA_DIR_HELP)
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
        choices=CONFORMAL_METHODS,
        default=CONFORMAL_METHODS[0],
        help="conformity score: cdf (median-centred CDF interval) or ordinal_aps",
    )
    calibrate.add_argument(
        "--split",
        choices=("val", "test"),
        default="val",
        help="calibration split; the sets are assessed on the other one",
    )
    calibrate.add_argument("--data-dir", help=DATA_DIR_HELP)
    calibrate.add_argument("--accelerator", help="override the run's accelerator, e.g. cpu")
    calibrate.add_argument("--json", action="store_true", help="print the record as JSON")
    calibrate.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=False, help="progress bars"
    )

    predict = commands.add_parser(
        "predict",
        help="predict classes of images or CSV rows with a trained run",
        description=(
            "Predict with the best checkpoint of a run; CSV on stdout or --output. CSV rows that\n"
            "also carry the run's target columns (vote counts, proportions or the label) are\n"
            "scored: target columns added, the measures printed on stderr."
        ),
        **sub,
    )
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument(
        "inputs", nargs="+", metavar="INPUTS", help="image files/folders or CSV files"
    )
    predict.add_argument(
        "--output",
        "-o",
        help="write the predictions CSV here (and the measures of labelled rows to "
        "NAME.measures.json beside it)",
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output file (and its measures file)",
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

    plot = commands.add_parser(
        "plot",
        help="draw the figures of finished runs from their files",
        description=(
            "Draw each run's figures into its directory from the run's files: learning\n"
            "curves (history.csv), the test confusion matrix (predictions_test.csv) and, for\n"
            "a learned ground distance, its matrix (best checkpoint). compare draws them only\n"
            "with --plots runs or each; this draws them for the runs you pick."
        ),
        **sub,
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories")

    compare = commands.add_parser(
        "compare",
        help="run many losses x seeds under one protocol and summarise",
        description="Compare losses under one protocol (see docs/results.md).",
        **sub,
    )
    add_compare_arguments(compare)
    for command in (train, evaluate, calibrate, predict, export, plot, compare):
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
    build_kernel.set_defaults(_parser=build_kernel)
    return parser
