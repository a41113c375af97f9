"""What each ``emdloss`` subcommand does once its arguments are parsed, and the output tables.

Split from :mod:`emdloss.cli` by job: :mod:`emdloss._cli_parser` builds the parser, this module
runs the commands (each imports the library lazily), :mod:`emdloss.cli` dispatches to them and
turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import warnings
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from emdloss.errors import UserError
from emdloss.vocabulary import DISTRIBUTION_METRIC_MODES, REPORTED_METRICS

_SHORT = {"one_off_accuracy": "1-off"}


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
    columns = [m for m in REPORTED_METRICS if any(m in row for row in metrics.values())]
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
    from emdloss.training.config import MAPPING_OPTIONS
    from emdloss.training.rundir import CONFIG_FILE

    given = {
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "config", "debug") and not key.startswith("_")
    }
    for name in MAPPING_OPTIONS:
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
            else:
                # Resuming where nothing ran starts a run (a preempted job's first start), but
                # says so: a mistyped --output would otherwise train with the defaults.
                print(
                    f"emdloss train: nothing to resume in {probe.run_dir} (no {CONFIG_FILE}); "
                    "starting a new run",
                    file=sys.stderr,
                )
        if args.config:
            base = TrainConfig.from_yaml(args.config, base=base)
        if base is not None:
            for name in MAPPING_OPTIONS:
                if name in given:
                    given[name] = {**getattr(base, name), **given[name]}
        config = TrainConfig.from_dict(given, base=base)
    result = train(config)
    if not result.metrics:
        return 0  # a non-zero rank of a multi-process run: rank 0 reports
    print(f"\nrun directory: {result.run_dir}")
    members = result.config.ensemble
    print(
        f"best epoch {result.best_epoch} of {result.metrics.get('epochs')} "
        f"(by {result.metrics.get('monitor')}), "
        + (f"an ensemble of {members} networks, " if members > 1 else "")
        + f"training {result.train_seconds:.1f} s"
    )
    if "test" not in result.metrics:  # --no-evaluate-test: the test split stays unread
        print(_with_baselines(result.metrics["val"], result.metrics, "val"))
        _print_distribution(result.metrics, "val")
        print("test split not evaluated (--no-evaluate-test); `emdloss evaluate RUN_DIR` reads it")
        return 0
    print(_with_baselines(result.test, result.metrics, "test"))
    _print_distribution(result.metrics, "test")
    return 0


def _print_distribution(metrics: Mapping[str, Any], part: str) -> None:
    table = format_distribution_table(metrics, part)
    if table:
        print(table)


def format_distribution_table(
    metrics: Mapping[str, Any], part: str, *, title: str | None = None
) -> str:
    """The distribution measures of a split: the model, the LDL baselines, the noise floor
    (``title`` names the rows measured instead of the split ``part``).

    Examples
    --------
    >>> m = {"loss": "emd2", "distribution": {"test": {"kl": 0.1, "cosine": 0.93}},
    ...      "distribution_baselines": {"test": {"training mean": {"kl": 0.13, "cosine": 0.92}}}}
    >>> print(format_distribution_table(m, "test"))
    test distribution measures (kl, emd2, ... lower is better; cosine, intersection, lcc, srcc, mode_accuracy higher)
    model                     kl      cosine
    emd2                      0.1000  0.9300
    baseline: training mean   0.1300  0.9200
    """
    model = (metrics.get("distribution") or {}).get(part)
    if not model:
        return ""
    rows: dict[str, Mapping[str, float]] = {str(metrics.get("loss", "model")): model}
    for name, values in ((metrics.get("distribution_baselines") or {}).get(part) or {}).items():
        rows[f"baseline: {name}"] = values
    floor = (metrics.get("noise_floor") or {}).get(part)
    if floor:
        rows[f"noise floor ({floor['mean_votes']:.1f} votes/item)"] = floor["mean"]
    columns = list(model)
    header = ["model", *columns]
    body = [
        [name, *[f"{float(values[c]):.4f}" if c in values else "-" for c in columns]]
        for name, values in rows.items()
    ]
    widths = [max(len(r[i]) for r in [header, *body]) + 2 for i in range(len(header))]
    higher = ", ".join(k for k, mode in DISTRIBUTION_METRIC_MODES.items() if mode == "max")
    what = title or f"{'validation' if part == 'val' else part} distribution measures"
    lines = [f"{what} (kl, emd2, ... lower is better; {higher} higher)"] + [
        "".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body]
    ]
    return "\n".join(lines)


def _with_baselines(rules: Mapping[str, Mapping[str, float]], metrics: Any, part: str) -> str:
    """The metrics table of a split, with the constant predictors' rows under the model's."""
    from emdloss.training import baseline_rows

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
    _print_distribution(metrics, "val")
    print(_with_baselines(metrics["test"], metrics, "test"))
    _print_distribution(metrics, "test")
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
    from emdloss.training import calibrate_run, conformal_summary
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
    from emdloss.training import measures_path, predict
    from emdloss.training.rundir import predictions_csv, read_config

    rows, measures = predict(
        args.run_dir,
        args.inputs,
        output=args.output,
        overwrite=args.overwrite,
        return_measures=True,
    )
    if rows and "conformal_set" in rows[0]:
        from emdloss.training import conformal_summary
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
    if measures is not None:
        print(format_measures(measures, read_config(args.run_dir).loss), file=sys.stderr)
    if args.output:
        print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
        if measures is not None:
            print(f"wrote the measures to {measures_path(args.output)}", file=sys.stderr)
    else:
        sys.stdout.write(predictions_csv(rows))
    return 0


def format_measures(measures: Mapping[str, Any], loss: str) -> str:
    """What ``predict`` prints about the labelled rows of its inputs
    (:func:`emdloss.training.predict`'s measures).

    Examples
    --------
    >>> m = {"labelled_rows": 2, "metrics": {"argmax": {"accuracy": 0.5}},
    ...      "distribution": {"kl": 0.25}}
    >>> print(format_measures(m, "emd2"))
    metrics per prediction rule over the 2 labelled input rows
    rule      accuracy
    argmax    0.5000
    distribution measures over the 2 labelled input rows (kl, emd2, ... lower is better; cosine, intersection, lcc, srcc, mode_accuracy higher)
    model  kl
    emd2   0.2500
    """
    over = f"over the {measures['labelled_rows']} labelled input rows"
    lines = [format_table(measures["metrics"], f"metrics per prediction rule {over}")]
    if measures.get("distribution"):
        record = {"loss": loss, "distribution": {"input": measures["distribution"]}}
        lines.append(
            format_distribution_table(record, "input", title=f"distribution measures {over}")
        )
    return "\n".join(lines)


def _export(args: argparse.Namespace) -> int:
    from emdloss.integrations.onnx import export_onnx

    model, sidecar = export_onnx(
        args.run_dir, args.output, rule=args.rule, opset=args.opset, overwrite=args.overwrite
    )
    print(f"wrote {model} and {sidecar}", file=sys.stderr)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from emdloss.training import write_run_plots
    from emdloss.training.rundir import (
        BEST_CHECKPOINT,
        CHECKPOINT_DIR,
        CONFIG_FILE,
        METRICS_FILE,
        read_metrics,
    )

    runs = [Path(run) for run in args.run_dirs]
    for run in runs:  # every folder is checked before any figure is drawn
        needed = (run / CONFIG_FILE, run / CHECKPOINT_DIR / BEST_CHECKPOINT)
        if not all(path.is_file() for path in needed) or read_metrics(run) is None:
            raise UserError(
                f"{run} is not a finished run directory: expected {CONFIG_FILE}, {METRICS_FILE} "
                f"and {CHECKPOINT_DIR}/{BEST_CHECKPOINT} in it"
            )
    for run in runs:
        written = write_run_plots(run)
        print(f"{run}: {', '.join(path.name for path in written) or 'nothing to draw'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from emdloss import compare as compare_module

    code: int = compare_module.run(args)
    return code


_OPTION = re.compile(r"\boption (\w+)=")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _spell_flags(message: str, flags: Collection[str] | None = None) -> str:
    """Spell the options of a library message (``option lr=0``) as the command's flags.

    ``flags`` are the option strings of the command (default: ``train``'s). An option that is
    a flag of the command reads as the flag (``--lr 0``); a train option that ``compare`` sets
    with ``--set`` as ``--set lr=0``; any other (a data source's option, such as
    ``val_fraction``) as the ``--data-option KEY=VALUE`` that sets it, where the command has it.
    """
    from emdloss.training.config import TrainConfig

    fields = set(TrainConfig.field_names())
    if flags is None:
        flags = {_flag(name) for name in fields} | {"--data-option"}

    def spell(match: re.Match[str]) -> str:
        name = match.group(1)
        if _flag(name) in flags:
            return _flag(name) + " "
        if "--set" in flags and name in fields:
            return f"--set {name}="
        if "--data-option" in flags and name not in fields:
            return f"--data-option {name}="
        return match.group(0)

    return _OPTION.sub(spell, message)


@contextlib.contextmanager
def _options() -> Iterator[None]:
    """Turn the ValueErrors of option parsing (TrainConfig) into user errors in flag spelling."""
    try:
        yield
    except UserError:
        raise
    except ValueError as error:
        raise UserError(_spell_flags(str(error))) from error


def _build_kernel(args: argparse.Namespace) -> int:
    import shutil

    from emdloss import _cpu_kernel

    source = _cpu_kernel.resources.files("emdloss").joinpath(_cpu_kernel._SOURCE_FILE)
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    print(f"source:   {source}")
    print(f"compiler: {compiler or 'none found on PATH'}; flags {' '.join(_cpu_kernel._flags())}")
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
