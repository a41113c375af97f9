"""The ``emdloss`` command: ``train``, ``evaluate``, ``calibrate``, ``predict`` and ``compare``.

Every option of ``emdloss train`` is a field of :class:`emdloss.training.TrainConfig`; a
``--config`` YAML file takes the same names as keys (dashes or underscores), and flags given on
the command line override the file. Bad input (:class:`emdloss.errors.UserError`, a missing
or unreadable file given by the user, a missing extra) ends the command with exit code 2 and a
one-line message, without a traceback (``--debug`` shows it); anything else is a bug in emdloss
and keeps its traceback, followed by a line asking for a report.

Starting the command is light: the parser needs neither Lightning nor PyYAML, so ``emdloss
--help`` works (and is instant) on a minimal install.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from emdloss.errors import UserError

__all__ = ["build_parser", "format_conformal", "format_table", "main"]

#: What the commands need beyond torch and numpy: module -> why, all from the ``train`` extra.
_TRAIN_MODULES = ("yaml", "lightning", "torchmetrics")
_TRAIN_EXTRA = "pip install 'emdloss[train]'"
_REPORT = "https://github.com/emdloss/emdloss/issues"

#: Conformity scores of ``emdloss calibrate`` (emdloss.conformal.METHODS, spelled out here so
#: that building the parser does not import torch).
_CONFORMAL_METHODS = ("cdf", "ordinal_aps")

#: Metrics shown in the summary tables, in order.
SUMMARY_METRICS = ("accuracy", "one_off_accuracy", "mae", "rmse", "qwk", "rps", "amae")
_SHORT = {"one_off_accuracy": "1-off"}


class CLIError(UserError):
    """A user error of the command line: reported as one line, exit code 2."""


def _missing_train_modules() -> list[str]:
    """Modules of the ``train`` extra that are not installed (found without importing them)."""
    return [name for name in _TRAIN_MODULES if importlib.util.find_spec(name) is None]


# ---------------------------------------------------------------------------- parser
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
        import yaml
    except ImportError:  # a minimal install: the value stays a string
        return key.strip().replace("-", "_"), value
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
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
    bools = {"pretrained", "tta", "deterministic", "progress", "resume", "overwrite"}
    bools.add("soft_targets")
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

    from emdloss.training._names import LOSS_NAMES

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


# ---------------------------------------------------------------------------- output
def format_table(metrics: Mapping[str, Mapping[str, float]], title: str = "") -> str:
    """Metrics per prediction rule as an aligned text table.

    Parameters
    ----------
    metrics : mapping
        ``{rule: {metric: value}}``.
    title : str
        First line.

    Returns
    -------
    str

    Examples
    --------
    >>> print(format_table({"argmax": {"accuracy": 0.5, "mae": 0.75}}, "test"))
    test
    rule      accuracy  mae
    argmax    0.5000    0.7500
    """
    columns = [m for m in SUMMARY_METRICS if any(m in row for row in metrics.values())]
    headers = ["rule", *[_SHORT.get(m, m) for m in columns]]
    rows = [
        [rule, *[f"{float(values[m]):.4f}" if m in values else "-" for m in columns]]
        for rule, values in metrics.items()
    ]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) + 2 for i in range(len(headers))]
    lines = [title] if title else []
    for row in [headers, *rows]:
        lines.append("".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------------------- commands
def _train(args: argparse.Namespace) -> int:
    from emdloss.training import TrainConfig, train
    from emdloss.training.rundir import CONFIG_FILE

    given = {
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "config", "debug") and not key.startswith("_")
    }
    for name in _DICT_FLAGS:
        if name in given:
            given[name] = dict(given[name])
    base = None
    with _options():
        # Resuming: the saved run's options are the base (its implementation included); a
        # --config file and flags override them.
        if given.get("resume"):
            probe = TrainConfig.from_dict({k: v for k, v in given.items() if k in ("output",)})
            saved = probe.run_dir / CONFIG_FILE
            if "output" in given and saved.is_file():
                base = TrainConfig.from_yaml(saved)
        if args.config:
            base = TrainConfig.from_yaml(args.config, base=base)
        if base is not None:
            for name in _DICT_FLAGS:
                if name in given:
                    given[name] = {**getattr(base, name), **given[name]}
        config = TrainConfig.from_dict(given, base=base)
    result = train(config)
    if not result.metrics:
        return 0  # a non-zero rank of a multi-process run: rank 0 reports
    print(f"\nrun directory: {result.run_dir}")
    print(
        f"best epoch {result.best_epoch} of {result.metrics.get('epochs')} "
        f"(by {result.metrics.get('monitor')}), training {result.train_seconds:.1f} s"
    )
    print(_with_baselines(result.test, result.metrics, "test"))
    return 0


def _with_baselines(rules: Mapping[str, Mapping[str, float]], metrics: Any, part: str) -> str:
    """The metrics table of a split, with the constant predictors' rows under the model's."""
    from emdloss.training._context import baseline_rows

    baselines = (metrics.get("baselines") or {}).get(part)
    title = ("validation" if part == "val" else part) + " metrics per prediction rule"
    if not baselines:
        return format_table(rules, title)
    rows = {**rules, **baseline_rows(baselines, list(metrics["class_names"]))}
    note = "(last rows: a constant prediction from the training classes, for comparison)"
    return format_table(rows, f"{title}\n{note}")


def _evaluate(args: argparse.Namespace) -> int:
    from emdloss.training import evaluate

    # Progress bars and logs go to stderr: stdout holds only the result (pure JSON with --json).
    with contextlib.redirect_stdout(sys.stderr):
        metrics = evaluate(
            args.run_dir,
            data_dir=args.data_dir,
            progress=args.progress,
            accelerator=args.accelerator,
        )
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(f"best checkpoint: epoch {metrics['best_epoch']}")
    print(_with_baselines(metrics["val"], metrics, "val"))
    print(_with_baselines(metrics["test"], metrics, "test"))
    if "conformal" in metrics:
        print(format_conformal(metrics["conformal"]))
    return 0


def format_conformal(summary: Mapping[str, Any]) -> str:
    """One line on a run's conformal prediction sets (``metrics.json``'s ``conformal`` entry).

    Examples
    --------
    >>> print(format_conformal({"method": "cdf", "alpha": 0.1, "calibration_split": "val",
    ...     "n_calibration": 120, "split": "test", "n": 400, "coverage": 0.89,
    ...     "mean_set_size": 2.84}))
    conformal sets (cdf, alpha 0.1, calibrated on val, n=120): test coverage 0.8900 (target >= 0.9), mean set size 2.840 (n=400)
    """
    return (
        f"conformal sets ({summary['method']}, alpha {summary['alpha']:g}, calibrated on "
        f"{summary['calibration_split']}, n={summary['n_calibration']}): {summary['split']} "
        f"coverage {summary['coverage']:.4f} (target >= {1 - summary['alpha']:g}), mean set "
        f"size {summary['mean_set_size']:.3f} (n={summary['n']})"
    )


def _calibrate(args: argparse.Namespace) -> int:
    from emdloss.training import calibrate_run
    from emdloss.training._calibrate import conformal_summary
    from emdloss.training.rundir import CALIBRATOR_FILE

    with contextlib.redirect_stdout(sys.stderr):
        record = calibrate_run(
            args.run_dir,
            alpha=args.alpha,
            method=args.method,
            split=args.split,
            data_dir=args.data_dir,
            accelerator=args.accelerator,
            progress=args.progress,
        )
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(format_conformal(conformal_summary(record)))
    if record["calibrator"]["qhat"] is None:
        print("every set is all classes: too few calibration examples for this alpha")
    print(f"wrote {args.run_dir}/{CALIBRATOR_FILE}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from emdloss.training import predict
    from emdloss.training.rundir import predictions_csv

    rows = predict(args.run_dir, args.inputs, output=args.output)
    if rows and "conformal_set" in rows[0]:
        from emdloss.training._calibrate import conformal_summary
        from emdloss.training.rundir import read_calibration

        record = read_calibration(args.run_dir)
        if record is not None:
            summary = conformal_summary(record)
            print(
                f"conformal_set: contiguous set holding the true class with probability >= "
                f"{1 - summary['alpha']:g} over examples like the {summary['calibration_split']} "
                f"split ({summary['method']}, n={summary['n_calibration']})",
                file=sys.stderr,
            )
    if args.output:
        print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(predictions_csv(rows))
    return 0


def _export(args: argparse.Namespace) -> int:
    from emdloss.integrations.onnx import export_onnx

    model, sidecar = export_onnx(args.run_dir, args.output, rule=args.rule, opset=args.opset)
    print(f"wrote {model} and {sidecar}", file=sys.stderr)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from emdloss import compare as compare_module

    code: int = compare_module.run(args)
    return code


_OPTION = re.compile(r"\boption (\w+)=")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _spell_flags(message: str) -> str:
    """Spell the options of a library message as the CLI's flags (``--lr 0``, not ``lr=0``)."""
    return _OPTION.sub(lambda match: _flag(match.group(1)) + " ", message)


@contextlib.contextmanager
def _options() -> Iterator[None]:
    """Turn the ValueErrors of option parsing (TrainConfig) into user errors in flag spelling."""
    try:
        yield
    except UserError:
        raise
    except ValueError as error:
        raise UserError(_spell_flags(str(error))) from error


def _user_error_types() -> tuple[type[BaseException], ...]:
    # FileNotFoundError & co: the paths the commands open are the user's.
    errors: list[type[BaseException]] = [
        UserError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
    ]
    if sys.modules.get("lightning") is not None:  # bad --accelerator, --devices, --precision
        try:
            from lightning.fabric.utilities.exceptions import MisconfigurationException
        except ImportError:  # pragma: no cover - a broken Lightning install
            pass
        else:
            errors.append(MisconfigurationException)
    return tuple(errors)


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    message = "; ".join(lines) if lines else type(error).__name__
    if isinstance(error, OSError) and error.filename and error.strerror:
        message = f"{error.strerror}: {error.filename}"
    return _spell_flags(message)


def _missing_extra(error: ModuleNotFoundError) -> bool:
    root = (error.name or "").split(".")[0]
    return root in _TRAIN_MODULES or root in ("torchvision", "matplotlib", "PIL", "tqdm")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``emdloss`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit code: 0 on success, 2 on bad input.

    Examples
    --------
    >>> main(["train", "--loss", "nope"])
    2
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # The command's own usage (argparse would print the top-level one): exits with 2.
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 2
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "train": _train,
        "evaluate": _evaluate,
        "calibrate": _calibrate,
        "predict": _predict,
        "export": _export,
        "compare": _compare,
        "build-kernel": _build_kernel,
    }
    prefix = f"emdloss {args.command}"
    try:
        missing = _missing_train_modules() if args.command != "build-kernel" else []
        if missing:
            raise UserError(
                f"this command needs the train extra ({', '.join(missing)} not installed): "
                f"{_TRAIN_EXTRA}"
            )
        if args.command != "build-kernel":
            from emdloss.training._build import quiet_lightning_logs

            quiet_lightning_logs()
        with _one_line_warnings(prefix):
            return handlers[args.command](args)
    except KeyboardInterrupt:
        print("emdloss: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:
        if not _missing_extra(error):
            _report_bug(prefix)
            raise
        if args.debug:
            traceback.print_exc()
        print(f"{prefix}: error: {error}; install the extra: {_TRAIN_EXTRA}", file=sys.stderr)
        return 2
    except _user_error_types() as error:
        if args.debug:
            traceback.print_exc()
        print(f"{prefix}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception:
        _report_bug(prefix)
        raise


@contextlib.contextmanager
def _one_line_warnings(prefix: str) -> Iterator[None]:
    """Show emdloss's InputWarnings as ``emdloss train: warning: ...``, one line each."""
    from emdloss.errors import InputWarning

    previous = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, InputWarning):
            print(f"{prefix}: warning: {message}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _build_kernel(args: argparse.Namespace) -> int:
    import shutil

    from emdloss import _cpu_kernel

    source = _cpu_kernel.resources.files("emdloss").joinpath(_cpu_kernel._SOURCE_FILE)
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    print(f"source:   {source}")
    print(f"compiler: {compiler or 'none found on PATH'}; flags {' '.join(_cpu_kernel._FLAGS)}")
    print(f"output:   {_cpu_kernel._build_dir()}")
    if _cpu_kernel.is_loaded():
        print("already built for this machine, source and torch version: nothing to do")
        return 0
    print("compiling (25-50 s) ...", flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = _cpu_kernel.build(verbose=args.verbose)
    if not ok:
        why = "; ".join(str(w.message) for w in caught) or "unknown reason"
        raise UserError(
            f"the C++ kernel did not build ({why}); it needs a C++ compiler and ninja "
            "(pip install 'emdloss[cpu-kernel]'); rerun with --verbose to see the compiler"
        )
    print("built and loaded; runs use it when asked: EMDLOSS_CPU_KERNEL=1 (docs/losses.md)")
    return 0


def _report_bug(prefix: str) -> None:
    # Printed before the traceback that Python prints for the re-raised error.
    print(
        f"{prefix}: internal error (a bug in emdloss, not in your input); please report it "
        f"with the command and the traceback below at {_REPORT}",
        file=sys.stderr,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
