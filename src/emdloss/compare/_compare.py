"""The orchestration of :func:`emdloss.compare.compare`: plan, train (or skip / resume), select
on validation data, test the chosen runs once, and write results.csv, summary.md and the plots.

What each output holds is described on the package's face, :mod:`emdloss.compare`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emdloss._atomic import write_json, write_text
from emdloss.compare._lock import output_lock
from emdloss.compare._plan import (
    RunSpec,
    check_dataset_names,
    check_losses,
    parse_grid,
    parse_names,
    parse_seeds,
    plan_runs,
)
from emdloss.compare._protocol import (
    PROTOCOL_FILE as _PROTOCOL_FILE,
)
from emdloss.compare._protocol import (
    check_protocol as _check_protocol,
)
from emdloss.compare._protocol import (
    protocol as _protocol,
)
from emdloss.compare._records import METRIC_KEYS, RunRecord, finished_record
from emdloss.compare._rows import DatasetInfo, baseline_rows, result_rows, results_csv
from emdloss.compare._runner import Job, TrainFn, build_config, complete_deferred_tests, run_all
from emdloss.compare._select import (
    Selection,
    choose_settings,
    validation_scores,
)
from emdloss.compare._select import (
    grid_csv as _grid_csv,
)
from emdloss.compare._side import SideProcess, side_process
from emdloss.compare._summary import render_summary
from emdloss.compare._verdict import verdict_table
from emdloss.errors import UserError
from emdloss.vocabulary import (
    DEFAULT_DATASETS,
    DEFAULT_LOSSES,
    DEFAULT_OUTPUT,
    DEFAULT_SEEDS,
    DISTRIBUTION_METRIC_MODES,
    ENGINES,
    EXECUTORS,
    RUN_PLOTS,
    SELECT_MODES,
    SOFT_TARGET_POLICIES,
)

#: Train options per data-set kind (or name) that fit the built-in budget; every loss of a data
#: set gets the same ones, and options given by the user replace them.
DATASET_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    # 20 epochs: on ERA and SWD the validation MAE stopped improving well before (checked
    # against 40 epochs and batch 32); the default's 48 runs take about 3 min on 2 cores.
    "tabular": {"model": "mlp", "epochs": 20, "batch_size": 64, "lr": 3e-3},
    "retinamnist": {"model": "cnn", "epochs": 30, "batch_size": 64, "lr": 1e-3},
}


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
    selections : dict
        The grid setting chosen on validation data per (data set, loss).
    table : str
        The answer in a few lines (:func:`emdloss.compare._verdict.verdict_table`): what the
        command prints, with the path of ``summary.md``.
    infos : list of DatasetInfo
        Per data set, the protocol its runs shared (sizes, seeds, folds, whether the test rows
        are resampled).
    """

    output: Path
    records: list[RunRecord]
    rows: list[dict[str, Any]]
    summary: str
    files: list[Path] = field(default_factory=list)
    wall_seconds: float = 0.0
    selections: dict[tuple[str, str], Selection] = field(default_factory=dict)
    table: str = ""
    infos: list[DatasetInfo] = field(default_factory=list)

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
        value = options.get(key)
        if value is not None:
            kwargs[key] = value if isinstance(value, str) else ",".join(map(str, value))
    if folds is not None:
        kwargs.update(fold=0, num_folds=folds)
    try:
        dataset = load_dataset(spec, data_dir=options.get("data_dir"), seed=seed, **kwargs)
    except UserError:
        raise
    except ValueError as error:
        # The loaders' ValueErrors are about the user's data and options (as in training).
        raise UserError(f"--dataset {spec}: {error}") from error
    resolved = dict(DATASET_DEFAULTS.get(spec, DATASET_DEFAULTS.get(dataset.kind, {})))
    resolved.update(options)
    if resolved.get("model") is None:
        # Named (the data's default network): the grouped engine groups runs by their model.
        from emdloss.training import default_model

        resolved["model"] = default_model(dataset)
    return dataset, resolved


def run_split(
    dataset: Any, folds: int | None, config: Any = None
) -> tuple[tuple[int, int, int], bool]:
    """The split sizes the runs train on (after ``config``'s ``limit_train/val/test``, as
    ``load_data`` cuts them; none without ``config``) and whether their test rows change from
    run to run: folds, a hold-out drawn from each seed, or a test subset drawn from the seed
    (``DatasetInfo.resampled``)."""

    def size(part: str) -> int:
        limit = getattr(config, f"limit_{part}", None)
        whole = len(getattr(dataset, part))
        return whole if limit is None else min(whole, int(limit))

    sizes = size("train"), size("val"), size("test")
    return sizes, folds is not None or dataset.resampled or sizes[2] < len(dataset.test)


def _threads(kind: str) -> int | None:
    """Torch threads per run: one for tables, else the process's (``cores // jobs``)."""
    return 1 if kind == "tabular" else None


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
    grid: Sequence[str] = (),
    select: str | None = None,
    baselines: bool = True,
    soft_targets: str = "refuse",
    executor: str = "local",
    ray_address: str | None = None,
    test_fn: Callable[[Path], Any] | None = None,
    plots: str = "end",
    engine: str = "grouped",
) -> CompareResult:
    """Train every data set x loss x grid setting x seed (x fold) under one protocol and report.

    Parameters
    ----------
    datasets : str or sequence of str
        Data set specs (``"era,lev"`` or a list), as :func:`emdloss.data.load_dataset` takes.
    losses : str or sequence of str
        Loss names of :data:`emdloss.training.LOSS_NAMES` (ours, baselines and peers).
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
        ``batch_size``, ``lr``, ``data_dir``, ...); they replace ``emdloss.compare.DATASET_DEFAULTS``.
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
    grid : sequence of str
        ``KEY=V1,V2,...`` items (:func:`emdloss.compare._plan.parse_grid`): every loss runs every
        combination on every seed; per loss, the combination with the best mean validation
        ``select`` metric is reported.
    select : str, optional
        Validation metric that chooses grid settings and the baselines' hyper-parameters and
        validated rule: a key of :data:`emdloss.vocabulary.SELECT_MODES`. A reported metric
        (default: the runs' ``monitor``, else ``mae``), or, for data with distribution targets,
        a measure of the predicted distribution (``kl``, ``emd2``, ``cosine``, ...), which is
        the default there (the runs' ``distribution_monitor``, ``kl`` unless set); the
        ordinal baselines and validated rules then keep the runs' ``monitor``.
    baselines : bool, default True
        Fit and report the baselines (class prior; logistic and ordinal logistic regression on
        tables) on every seed's splits.
    soft_targets : {"refuse", "hard-for-all"}
        On data with soft targets, when some loss cannot use them: refuse to run, or train every
        loss on the hard labels (``soft_targets=False`` for every run).
    executor : {"local", "ray"}
        Processes on this machine, or Ray tasks (``emdloss[ray]``).
    ray_address : str, optional
        Ray cluster to join (``executor="ray"``); else a local instance is started.
    test_fn : callable, optional
        ``test(run_dir)``, the deferred test evaluation of a run trained without it, in place of
        :func:`emdloss.training.run_deferred_test` (tests). With a grid, every run is trained
        with ``evaluate_test=False`` and only the runs of the chosen settings are tested.
    plots : {"end", "runs", "none", "each"}
        The figures of the runs (``emdloss.vocabulary.RUN_PLOTS`` says what each draws):
        by default one overview per data set (``plots/<dataset>/confusion_matrices.png`` and
        ``learning_curves.png``) and no run's own PNGs; ``"runs"`` adds each reported run's own
        figures at the end; ``"each"`` has every run draw its own as it ends (``emdloss
        train``'s way, the slowest). ``emdloss plot RUN_DIR`` draws a run's own on request.
    engine : {"grouped", "per-run"}
        ``"grouped"``: the runs that share a shape (data set, model, budget) train as one
        vectorised model, each with its own numbers equal to the per-run path's
        (:mod:`emdloss.training.grouped`); the others train alone, and compare names them and
        why on stderr. ``"per-run"``: every run alone.

    Returns
    -------
    CompareResult

    Raises
    ------
    UserError
        Unknown data set, loss or train option, bad seeds/folds/jobs/grid, an output directory
        holding runs trained with other options, or soft targets that some loss would ignore
        (``soft_targets="refuse"``); raised before any run starts. The output directory in use
        by another comparison (names its PID) is one too. A UserError is a ValueError.
    ImportError
        A peer loss whose package is missing (the message names ``emdloss[peers]``).

    Examples
    --------
    >>> compare("era", "no_such_loss", 1, "unused")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emdloss.errors.UserError: unknown loss 'no_such_loss'; valid losses: ...
    """
    start = time.perf_counter()
    if conformal is not None:  # checked before any run starts
        from emdloss.conformal import check_alpha, check_method

        try:
            conformal = check_alpha(conformal)
        except ValueError as error:
            raise UserError(f"--conformal {conformal!r}: {error}") from None
        try:
            conformal_method = check_method(conformal_method)
        except ValueError as error:
            raise UserError(f"--conformal-method {conformal_method!r}: {error}") from None
    dataset_list = parse_names(datasets, "datasets")
    loss_list = parse_names(losses, "losses")
    seed_list = parse_seeds(seeds)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"--jobs: expected an integer >= 1, got {jobs!r}")
    if executor not in EXECUTORS:
        raise UserError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if plots not in RUN_PLOTS:
        raise UserError(f"--plots: expected one of {', '.join(RUN_PLOTS)}, got {plots!r}")
    if engine not in ENGINES:
        raise UserError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if soft_targets not in SOFT_TARGET_POLICIES:
        raise UserError(
            f"--soft-targets: expected one of {', '.join(SOFT_TARGET_POLICIES)}, got {soft_targets!r}"
        )
    from emdloss.training.config import TrainConfig

    settings = parse_grid(grid, TrainConfig.field_names())
    specs = plan_runs(dataset_list, loss_list, seed_list, folds, settings)
    check_losses(loss_list)
    check_dataset_names(dataset_list)
    user = {str(k).replace("-", "_"): v for k, v in (train_options or {}).items()}
    for key in ("dataset", "loss", "seed", "output", "fold", "num_folds", "resume"):
        if key in user:
            raise UserError(
                f"train option {key!r} is set by compare itself for every run; use the "
                "compare arguments (datasets, losses, seeds, output, folds) instead"
            )
    if select is not None and select not in SELECT_MODES:
        raise UserError(f"--select: expected one of {', '.join(SELECT_MODES)}, got {select!r}")
    # The ordinal metric (the baselines' choice, the validated rule, the verdicts) ...
    metric = select if select in METRIC_KEYS else str(user.get("monitor", "mae"))
    if metric not in METRIC_KEYS:
        given = "" if select else " (the runs' monitor; give --select)"
        raise UserError(
            f"--select: expected one of {', '.join(METRIC_KEYS)}, got {metric!r}{given}"
        )
    # ... and, per data set, what chooses the grid's setting (a distribution measure there).
    chosen_on: dict[str, str] = {}
    # compare shows its own progress bar over runs; per-run bars would interleave.
    user.setdefault("progress", False)
    # A run's own PNGs cost more than training a small run: only with --plots each.
    user.setdefault("plots", plots == "each")
    # The LDL baselines of distribution targets are fitted once per distinct split (below),
    # not in every run.
    user.setdefault("ldl_baselines", False)
    out = Path(output)
    infos: list[DatasetInfo] = []
    options_by_dataset: dict[str, Mapping[str, Any]] = {}
    # What an unset model stood for in a comparison stored before compare named it.
    implied: dict[str, dict[str, Any]] = {}
    from emdloss.training import default_model

    for spec in dataset_list:
        dataset, options = _load_info(spec, user, seed_list[0], folds)
        implied[spec] = {"model": default_model(dataset)}
        targets = _soft_target_policy(spec, dataset, loss_list, soft_targets, options)
        # Build one config per data set and setting now: unknown options and bad values fail
        # here, and values given as strings (--set epochs=5) take the option's type (5), as
        # stored.
        for setting in settings:
            build_config(
                RunSpec(spec, loss_list[0], seed_list[0], None, None, setting), out, options
            )
        config = build_config(RunSpec(spec, loss_list[0], seed_list[0], None), out, options)
        options = {key: getattr(config, key) for key in options}
        chosen_on[spec] = _grid_measure(spec, dataset, select, metric, config)
        options_by_dataset[spec] = options
        sizes, resampled = run_split(dataset, folds, config)
        infos.append(
            DatasetInfo(
                spec=spec,
                num_classes=dataset.num_classes,
                kind=dataset.kind,
                sizes=sizes,
                options=_protocol(options, None),
                seeds=tuple(seed_list),
                folds=folds,
                losses=tuple(loss_list),
                class_names=tuple(dataset.class_names),
                protocol=getattr(dataset, "protocol", ""),
                targets=targets,
                select=metric,
                resampled=resampled,
            )
        )
    # The LDL baselines choose their k and L2 on the grid's measure where it is a distribution
    # measure, else on the runs' distribution_monitor.
    ldl_measure = {
        spec: measure if measure in DISTRIBUTION_METRIC_MODES else None
        for spec, measure in chosen_on.items()
    }
    protocols = {spec: _protocol(options_by_dataset[spec], folds) for spec in dataset_list}
    # One comparison per directory: a second one would train the same runs over this one's.
    with output_lock(out):
        merged = _check_protocol(out, protocols, implied)
        write_json(out / _PROTOCOL_FILE, {"datasets": merged})

        # Tabular runs are overhead-bound: a second torch thread only spins. The default took
        # 5:50 with 2 threads and 2:45 with 1 on 2 cores, with identical metrics.
        kinds = {info.spec: info.kind for info in infos}
        # With a grid the test split of a run is read only if its setting is chosen (below).
        deferred = {"evaluate_test": False} if len(settings) > 1 else {}
        jobs_list: list[Job] = [
            (
                s,
                out / s.relative_dir,
                {**options_by_dataset[s.dataset], **deferred},
                _threads(kinds[s.dataset]),
            )
            for s in specs
        ]
        # The work that waits for no run (the baselines) goes to a second process now, where
        # there is an idle core (compare._side); it is done here if that process cannot.
        unfinished = sum(finished_record(s, out / s.relative_dir, "skipped") is None for s in specs)
        wanted = baselines or len(infos) > 1
        side = side_process(jobs, executor, mp_context, unfinished) if wanted else None
        try:
            fits: dict[str, Any] = {}
            fit_args = {
                spec: (
                    spec,
                    options_by_dataset[spec],
                    seed_list,
                    folds,
                    metric,
                    loss_list[0],
                    ldl_measure[spec],
                )
                for spec in dataset_list
            }
            if side is not None and baselines:
                for spec in dataset_list:
                    fits[spec] = side.submit(_baselines, *fit_args[spec])
            if side is not None and len(infos) > 1:
                from emdloss.compare._plots import warm_up

                side.submit(warm_up)
            records = run_all(
                jobs_list,
                jobs=jobs,
                train_fn=train_fn,
                progress=progress,
                mp_context=mp_context,
                executor=executor,
                ray_address=ray_address,
                engine=engine,
            )
            monitor_rule = str(user.get("monitor_rule", "argmax"))
            # Selection reads validation metrics only; the chosen runs' test metrics are the results.
            selections: dict[tuple[str, str], Selection] = {}
            for spec in dataset_list:
                of_spec = [r for r in records if r.spec.dataset == spec]
                scores = validation_scores(of_spec, chosen_on[spec], monitor_rule)
                selections.update(choose_settings(scores, chosen_on[spec], monitor_rule))
            reported = [
                r
                for r in records
                if r.status == "failed"
                or selections[(r.spec.dataset, r.spec.loss)].chosen == r.spec.setting
            ]
            # Now, and only for the chosen runs, the test split: once per run.
            reported = complete_deferred_tests(reported, test_fn)
            if plots == "runs":
                from emdloss.compare._plots import write_run_plots

                write_run_plots(reported)
            rows = result_rows(reported)
            from emdloss.compare._plots import draw_figures  # matplotlib: only when drawing

            # The figures read the runs' rows only (not the baselines' or conformal columns):
            # drawn now, the first half of the data sets' in the side process (once it has
            # fitted the baselines), the rest here.
            half = len(infos) // 2 if side is not None else 0
            figures = (out, reported, list(rows), infos[:half], plots != "none")
            theirs = side.submit(draw_figures, *figures) if side is not None and half else None
            mine = draw_figures(out, reported, list(rows), infos[half:], plots != "none")
            errors: dict[str, dict[str, str]] = {}
            fitted: list[dict[str, Any]] = []  # the LDL baselines of distribution targets
            if baselines:
                for spec in dataset_list:
                    extra, errors[spec], ldl = SideProcess.result(
                        fits.get(spec), _baselines, *fit_args[spec]
                    )
                    rows += extra
                    fitted += ldl
            section = ""
            conformal_files: list[Path] = []
            if conformal is not None:
                from emdloss.compare import _conformal

                # The reported runs (with a grid, the chosen setting's): calibrated on validation.
                calibrations = _conformal.calibrate_records(reported, conformal, conformal_method)
                _conformal.add_conformal_columns(rows, reported, calibrations)
                section = _conformal.conformal_section(
                    reported, calibrations, infos, conformal, conformal_method
                )
                conformal_files = _conformal.plot_set_sizes(out, reported, calibrations, infos)
            files = [write_text(out / "results.csv", results_csv(rows))]
            from emdloss.compare import _distribution

            # Data with distribution targets: their measures, LDL baselines and noise floor.
            # Baselines that runs fitted themselves (ldl_baselines=true, older runs) give way to
            # compare's own fit of the same splits: one row per baseline and split.
            refitted = {row["dataset"] for row in fitted}
            distribution = [
                row
                for row in _distribution.distribution_rows(reported)
                if not (row["dataset"] in refitted and str(row["loss"]).startswith("baseline:"))
            ] + fitted
            if distribution:
                files.append(
                    write_text(
                        out / _distribution.DISTRIBUTION_FILE,
                        _distribution.distribution_csv(distribution),
                    )
                )
                measures = _distribution.distribution_section(distribution, infos)
                section = section.rstrip("\n") + "\n\n" + measures if section else measures
            if len(settings) > 1:
                files.append(
                    write_text(out / "grid.csv", _grid_csv(records, monitor_rule, selections))
                )
            done = SideProcess.result(theirs, draw_figures, *figures) if half else ([], [])
            # Per data set: metrics, paired differences, per-class MAE; then the overviews.
            files += done[0] + mine[0] + conformal_files + done[1] + mine[1]
            summary = render_summary(
                reported,
                infos,
                output=str(out),
                rows=rows,
                selections=selections,
                baseline_errors=errors,
            )
            if section:
                summary = summary.rstrip("\n") + "\n\n" + section
            files.append(write_text(out / "summary.md", summary))
            table = verdict_table(infos, rows, distribution=distribution, measures=ldl_measure)
            return CompareResult(
                out,
                records,
                rows,
                summary,
                files,
                time.perf_counter() - start,
                selections,
                table,
                infos,
            )

        finally:
            if side is not None:
                side.close()


def _grid_measure(spec: str, dataset: Any, select: str | None, metric: str, config: Any) -> str:
    """What chooses the grid's setting on data set ``spec``: ``--select`` when given (a
    distribution measure only where the targets are distributions), else the runs'
    ``distribution_monitor`` on distribution targets and the ordinal ``metric`` elsewhere."""
    distribution = bool(getattr(dataset, "distribution_targets", False))
    if select in DISTRIBUTION_METRIC_MODES and not distribution:
        raise UserError(
            f"--select {select}: a measure of distribution targets, but {spec} has class "
            f"labels; choose one of {', '.join(METRIC_KEYS)}"
        )
    if select is not None:
        return select
    return str(config.distribution_monitor) if distribution else metric


def _soft_target_policy(
    spec: str, dataset: Any, losses: Sequence[str], policy: str, options: dict[str, Any]
) -> str:
    """Apply ``--soft-targets`` to a data set's options; return the summary's sentence."""
    if options.get("soft_targets") is False or str(options.get("soft_targets")).lower() == "false":
        return "hard class labels for every loss (soft_targets=false)."
    if not getattr(dataset, "soft", False):
        return ""
    from emdloss.training import build_loss

    hard_only = [
        name
        for name in losses
        if not build_loss(
            name, dataset.num_classes, train_targets=list(dataset.train.targets)
        ).supports_soft_targets
    ]
    if not hard_only:
        return "the soft target distributions of the data, for every loss (all can use them)."
    if policy == "refuse":
        raise UserError(
            f"{spec} has soft targets (rating distributions) but {', '.join(hard_only)} can only "
            "use class labels: they would be trained on other targets than the rest. Use "
            "--soft-targets hard-for-all to train every loss on the hard labels, or leave those "
            "losses out"
        )
    options["soft_targets"] = False
    return (
        f"hard class labels for every loss (--soft-targets hard-for-all): {spec} has soft "
        f"targets, but {', '.join(hard_only)} cannot use them."
    )


def _baselines(
    spec: str,
    options: Mapping[str, Any],
    seeds: Sequence[int],
    folds: int | None,
    metric: str,
    loss: str,
    measure: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str], list[dict[str, Any]]]:
    """Baseline rows of every seed (and fold), on the splits the runs used, and the rows of
    the LDL baselines on data with distribution targets (:mod:`._distribution`), their
    hyper-parameters chosen on validation ``measure`` (default: the runs'
    ``distribution_monitor``)."""
    import tempfile

    from emdloss.compare._baselines import baseline_metrics
    from emdloss.compare._distribution import baseline_rows as distribution_baseline_rows
    from emdloss.training import distribution_baseline_scores, load_data

    rows: list[dict[str, Any]] = []
    distribution: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    fold_ids: list[int | None] = [None] if folds is None else list(range(folds))
    fitted: dict[tuple[Any, ...], dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as unused:
        for seed in seeds:
            for fold in fold_ids:
                config = build_config(RunSpec(spec, loss, seed, fold, folds), Path(unused), options)
                dataset = load_data(config)
                metrics, failed = baseline_metrics(dataset, metric)
                errors.update(failed)
                rows += baseline_rows(spec, seed, fold, metrics)
                if dataset.distribution_targets:
                    # An official split is the same for every seed: fit the baselines once.
                    key = tuple(tuple(getattr(dataset, p).ids) for p in ("train", "val", "test"))
                    if key not in fitted:
                        fitted[key] = distribution_baseline_scores(
                            dataset, measure or config.distribution_monitor
                        )["test"]
                    distribution += distribution_baseline_rows(spec, seed, fold, fitted[key])
    return rows, errors, distribution
