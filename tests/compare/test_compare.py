"""`emdloss compare` end to end: CI-sized real runs, resumption, parallel runs and clear errors.

The real runs (a skordinal table through the CLI entry points, RetinaMNIST through the Python API)
train tiny budgets with :func:`emdloss.training.train`; the harness tests inject a fake training
function that writes a metrics.json, so that calls can be counted and interrupted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

# The train extra: compare trains with Lightning and reads YAML configs.
pytest.importorskip("yaml")
pytest.importorskip("lightning")

import yaml

from emdloss.compare import CSV_COLUMNS, METRIC_KEYS, PEER_PACKAGES, add_arguments, compare, run
from emdloss.compare._runner import available_cores
from emdloss.reference_results import reference_tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------- test doubles
def fake_train(config: Any) -> SimpleNamespace:
    """Write a complete metrics.json whose values depend only on (loss, seed)."""
    run_dir = Path(config.output)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([config.seed, sum(map(ord, config.loss))])
    test = {rule: {k: float(rng.uniform()) for k in METRIC_KEYS} for rule in ("argmax", "median")}
    metrics = {"test": test, "val": test, "train_seconds": 0.25, "threads": torch.get_num_threads()}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return SimpleNamespace(run_dir=run_dir, metrics=metrics, train_seconds=0.25)


class Recorder:
    """A fake training function that records its configs and can interrupt on the n-th call."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.configs: list[Any] = []
        self.interrupt_at = interrupt_at

    def __call__(self, config: Any) -> SimpleNamespace:
        self.configs.append(config)
        if len(self.configs) == self.interrupt_at:
            # Killed mid-run: a checkpoint exists, metrics.json does not.
            checkpoint = Path(config.output) / "checkpoints" / "last.ckpt"
            checkpoint.parent.mkdir(parents=True)
            checkpoint.write_bytes(b"weights")
            raise KeyboardInterrupt
        return fake_train(config)

    @property
    def calls(self) -> list[tuple[str, int, bool]]:
        return [(c.loss, c.seed, c.resume) for c in self.configs]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _summary_cells(summary: str, dataset: str) -> dict[str, list[str]]:
    section = summary.split(f"## {dataset}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| loss"):
            cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows


def _check_outputs(out: Path, dataset: str, losses: list[str], seeds: int) -> list[dict[str, str]]:
    """results.csv rows/columns, summary means and stds recomputed from it, plots present."""
    every = _csv(out / "results.csv")
    assert tuple(every[0].keys()) == CSV_COLUMNS
    # The baselines are rows beside the losses (issue 11); the runs are the others.
    assert {r["loss"] for r in every if r["loss"].startswith("baseline:")} >= {"baseline:prior"}
    rows = [r for r in every if not r["loss"].startswith("baseline:")]
    rules = sorted({row["rule"] for row in rows})
    assert "argmax" in rules
    assert len(rows) == len(losses) * seeds * len(rules)
    summary = (out / "summary.md").read_text(encoding="utf-8")
    cells = _summary_cells(summary, dataset)
    for loss in losses:
        argmax = [r for r in rows if r["loss"] == loss and r["rule"] == "argmax"]
        assert sorted(int(r["seed"]) for r in argmax) == list(range(seeds))
        assert cells[loss][0] == str(seeds)
        for column, metric in enumerate(METRIC_KEYS, start=1):
            values = np.array([float(r[metric]) for r in argmax])
            expected = f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
            assert cells[loss][column] == expected, (loss, metric)
    assert (out / "plots" / dataset / "metrics.png").read_bytes()[:8] == PNG_MAGIC
    assert "**Verdict" in summary
    return rows


# ------------------------------------------------------------------------------- real runs
@pytest.mark.slow
def test_cli_compare_on_a_skordinal_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--dataset", "lev", "--losses", "ce,emd2", "--seeds", "2", "--output", str(tmp_path)]
    argv += ["--epochs", "2", "--batch-size", "128", "--no-progress"]
    assert run(parser.parse_args(argv)) == 0
    printed = capsys.readouterr().out
    _check_outputs(tmp_path, "lev", ["ce", "emd2"], 2)
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    # The terminal shows the answer: a line per data set and loss (the test MAE, the paired
    # difference to ce, the verdict) and where summary.md is; summary.md keeps the rest.
    lines = printed.strip().splitlines()
    assert len(lines) <= 7 and "**Verdict" not in printed, printed
    assert lines[0].split()[:5] == ["data", "set", "loss", "runs", "MAE"]
    mae = {
        loss: {
            r["seed"]: float(r["mae"])
            for r in _csv(tmp_path / "results.csv")
            if r["loss"] == loss and r["rule"] == "argmax"
        }
        for loss in ("ce", "emd2")
    }
    ce, emd2 = lines[1].split(), lines[2].split()
    assert ce == ["lev", "ce", "2", f"{np.mean(list(mae['ce'].values())):.3f}", "reference"]
    difference = np.mean([mae["emd2"][k] - mae["ce"][k] for k in mae["ce"]])
    assert emd2[:5] == [
        "lev",
        "emd2",
        "2",
        f"{np.mean(list(mae['emd2'].values())):.3f}",
        f"{difference:+.3f}",
    ]
    assert " ".join(emd2[7:]) in ("beats ce", "ties with ce", "loses to ce")
    assert lines[-1].endswith(str(tmp_path / "summary.md"))
    assert "4 runs: 4 trained now, 0 finished earlier, 0 failed" in printed
    cells = _summary_cells(summary, "lev")
    for row in reference_tables("lev")[0].rows:  # TOC-UCO's published LEV rows beside ours
        assert cells[f"TOC-UCO: {row.method}"][3] == f"{row.metrics['mae']:.3f}"
    assert "30 stratified 70/30 hold-outs" in summary
    assert (tmp_path / "plots" / "lev" / "per_class_mae.png").read_bytes()[:8] == PNG_MAGIC
    # Every run directory is the training's own, with identical options except loss and seed.
    configs = sorted((tmp_path / "runs" / "lev").glob("*/seed*/config.yaml"))
    assert len(configs) == 4
    # --plots end (the default): the runs trained without plots and none drew its own PNGs;
    # the data set's overview figures show them (test_plots_end_runs_and_the_plot_command).
    for config in configs:
        assert yaml.safe_load(config.read_text())["plots"] is False
        assert not list(config.parent.glob("*.png")), config.parent
    for name in ("confusion_matrices.png", "learning_curves.png"):
        assert (tmp_path / "plots" / "lev" / name).read_bytes()[:8] == PNG_MAGIC

    # Rerunning finds every run finished and trains nothing.
    metrics = sorted((tmp_path / "runs").rglob("metrics.json"))
    stamps = [p.stat().st_mtime_ns for p in metrics]
    assert run(parser.parse_args(argv)) == 0
    assert "0 trained now, 4 finished earlier" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in metrics] == stamps


def test_plots_end_runs_and_the_plot_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20: ``--plots end`` (the default) draws no run's own PNGs but, per data set, the
    losses' pooled test confusion matrices and the runs' monitored validation curves;
    ``--plots runs`` adds each run's own figures; ``emdloss plot RUN_DIR`` draws one run's."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    from emdloss.cli import main
    from emdloss.compare._plots import OVERVIEW_FILES
    from emdloss.plots import plot_confusion_matrices, plot_runs_by_group
    from emdloss.training import rundir

    drawn: dict[str, Any] = {}

    def spy(function: Any) -> Any:
        def wrapped(data: Any, *args: Any, **kwargs: Any) -> Any:
            drawn[function.__name__] = (data, kwargs)
            return function(data, *args, **kwargs)

        return wrapped

    options = {"epochs": 3, "batch_size": 128}
    kwargs: dict[str, Any] = {"train_options": options, "progress": False, "baselines": False}
    out = tmp_path / "end"
    import emdloss.plots as plots_module

    with pytest.MonkeyPatch.context() as patch:
        for function in (plot_confusion_matrices, plot_runs_by_group):
            patch.setattr(plots_module, function.__name__, spy(function))
        compare("lev", "ce,xemd1", 2, out, **kwargs)
    runs = sorted(p.parent for p in (out / "runs").rglob("metrics.json"))
    assert len(runs) == 4
    assert all(not list(run.glob("*.png")) for run in runs)
    for name in OVERVIEW_FILES[:2]:
        assert (out / "plots" / "lev" / name).read_bytes()[:8] == PNG_MAGIC
    assert not (out / "plots" / "lev" / OVERVIEW_FILES[2]).exists()  # hard labels: no histograms
    # Oracle: each loss's panel is its runs' test predictions pooled (scikit-learn's counts).
    matrices = drawn["plot_confusion_matrices"][0]
    assert list(matrices) == ["ce", "xemd1"]
    for loss, counts in matrices.items():
        pairs = [rundir.read_predictions(run, "argmax") for run in runs if run.parent.name == loss]
        target = np.concatenate([t for t, _ in pairs])  # type: ignore[index]
        preds = np.concatenate([p for _, p in pairs])  # type: ignore[index]
        expected = sk_confusion_matrix(target, preds, labels=range(counts.shape[0]))
        np.testing.assert_array_equal(counts, expected)
    curves, options_drawn = drawn["plot_runs_by_group"]
    for loss in ("ce", "xemd1"):
        for seed in (0, 1):
            run = out / "runs" / "lev" / loss / f"seed{seed}"
            history = rundir.read_history(run)
            assert curves[loss][f"seed{seed}"] == [row["val_mae"] for row in history]
            best = json.loads((run / "metrics.json").read_text())["best_epoch"]
            assert options_drawn["marks"][loss][f"seed{seed}"] == best
    assert "emdloss plot RUN_DIR" in (out / "summary.md").read_text(encoding="utf-8")

    # --plots runs: the same, plus each reported run's own figures.
    compare("lev", "ce,xemd1", 2, tmp_path / "runs", plots="runs", **kwargs)
    for run in sorted((tmp_path / "runs" / "runs").rglob("metrics.json")):
        names = {"learning_curves.png", "confusion_matrix.png"}
        names |= {"ground_distance.png"} if run.parent.parent.name == "xemd1" else set()
        assert {p.name for p in run.parent.glob("*.png")} == names, run.parent

    # --plots none: no figure of the runs (the comparison's own figures stay).
    compare("lev", "ce", 2, tmp_path / "none", plots="none", **kwargs)
    assert not (tmp_path / "none" / "plots" / "lev" / OVERVIEW_FILES[0]).exists()
    assert (tmp_path / "none" / "plots" / "lev" / "metrics.png").is_file()

    # emdloss plot RUN_DIR: one run's own figures on request, written atomically.
    run = out / "runs" / "lev" / "xemd1" / "seed1"
    capsys.readouterr()
    assert main(["plot", str(run)]) == 0
    printed = capsys.readouterr().out
    assert (
        printed.strip() == f"{run}: learning_curves.png, confusion_matrix.png, ground_distance.png"
    )
    for name in ("learning_curves.png", "confusion_matrix.png", "ground_distance.png"):
        assert (run / name).read_bytes()[:8] == PNG_MAGIC
    assert not [p for p in run.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_the_side_process_gives_the_comparison_this_process_gives_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: with an idle core, the baselines are fitted in a second process while the runs
    train, and half of the data sets' figures are drawn there: the same rows, summary and files
    as without it (and the side process did deliver them)."""
    from emdloss.compare import _compare as compare_module
    from emdloss.compare._rows import TIME_KEYS
    from emdloss.compare._side import SideProcess, side_process

    if available_cores() < 2:
        pytest.skip("the side process needs a second core")
    delivered: list[str] = []
    real = SideProcess.result

    def spy(future: Any, fn: Any, *args: Any) -> Any:
        if future is not None and future.exception() is None:
            delivered.append(fn.__name__)
        return real(future, fn, *args)

    options = {"epochs": 1, "batch_size": 128}
    kwargs: dict[str, Any] = {"train_options": options, "progress": False}
    monkeypatch.setattr(SideProcess, "result", staticmethod(spy))
    side = compare("lev,swd", "ce,emd2", 3, tmp_path / "side", **kwargs)  # 12 runs: MIN_RUNS
    assert delivered == ["_baselines", "_baselines", "draw_figures"]
    monkeypatch.setattr(compare_module, "side_process", lambda *args: None)
    alone = compare("lev,swd", "ce,emd2", 3, tmp_path / "alone", **kwargs)
    # A rerun trains nothing: no side process for the figures and baselines of finished runs.
    delivered.clear()
    monkeypatch.setattr(compare_module, "side_process", side_process)
    compare("lev,swd", "ce,emd2", 3, tmp_path / "side", **kwargs)
    assert delivered == []

    def shown(result: Any) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in result.rows]

    assert shown(side) == shown(alone)
    assert [p.relative_to(tmp_path / "side") for p in side.files] == [
        p.relative_to(tmp_path / "alone") for p in alone.files
    ]
    for name in ("metrics.png", "paired_vs_ce.png", "confusion_matrices.png"):
        assert (tmp_path / "side" / "plots" / "lev" / name).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_compare_on_retinamnist(tmp_path: Path, data_dir: Path) -> None:
    limits = {"limit_train": 96, "limit_val": 40, "limit_test": 80}
    result = compare(
        "retinamnist",
        ["ce", "emd2"],
        2,
        tmp_path,
        train_options={"epochs": 1, "batch_size": 32, "data_dir": str(data_dir), **limits},
        progress=False,
    )
    assert not result.failed, [r.error for r in result.failed]
    rows = _check_outputs(tmp_path, "retinamnist", ["ce", "emd2"], 2)
    assert {r["dataset"] for r in rows} == {"retinamnist"}
    summary = result.summary
    cells = _summary_cells(summary, "retinamnist")
    assert cells["MedMNIST v2: Google AutoML Vision"][1] == "0.531"  # accuracy column
    assert cells["MedMNIST v2: ResNet-18 (28)"][1] == "0.524"
    assert "same official test set" in summary
    assert "official MedMNIST v2 split" in summary
    assert "train/val/test 96/40/80" in summary  # the sizes the runs trained on, not the data's


# ------------------------------------------------------------------------------- harness
def test_interrupted_compare_resumes_without_rerunning_finished_runs(tmp_path: Path) -> None:
    first = Recorder(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        compare("lev", "ce,emd2", 2, tmp_path, train_fn=first, progress=False)
    assert first.calls == [("ce", 0, False), ("ce", 1, False), ("emd2", 0, False)]
    finished = sorted((tmp_path / "runs").rglob("metrics.json"))
    assert len(finished) == 2
    stamps = [p.stat().st_mtime_ns for p in finished]
    # A half-written run without a checkpoint is restarted from scratch.
    stale = tmp_path / "runs" / "lev" / "emd2" / "seed1"
    stale.mkdir(parents=True)
    (stale / "half-written.txt").write_text("x", encoding="utf-8")

    second = Recorder()
    result = compare("lev", "ce,emd2", 2, tmp_path, train_fn=second, progress=False)
    # Finished runs skipped, the checkpointed one resumed, the stale one restarted.
    assert second.calls == [("emd2", 0, True), ("emd2", 1, False)]
    assert not (stale / "half-written.txt").exists()
    assert [r.status for r in result.records] == ["skipped", "skipped", "done", "done"]
    assert [p.stat().st_mtime_ns for p in finished] == stamps
    # runs x rules: argmax, median and the validation-chosen one
    runs = [r for r in _csv(tmp_path / "results.csv") if not r["loss"].startswith("baseline:")]
    assert len(runs) == 4 * 3

    third = Recorder()
    compare("lev", "ce,emd2", 2, tmp_path, train_fn=third, progress=False)
    assert third.calls == []


def test_runs_share_one_protocol_and_refuse_mixing(tmp_path: Path) -> None:
    recorder = Recorder()
    compare("swd", "ce,l2", [3, 5], tmp_path, train_fn=recorder, progress=False,
            train_options={"epochs": 4, "lr": 0.01})  # fmt: skip
    assert sorted(recorder.calls) == [("ce", 3, False), ("ce", 5, False), ("l2", 3, False),
                                      ("l2", 5, False)]  # fmt: skip
    shared = {(c.epochs, c.lr, c.model, c.batch_size, c.dataset) for c in recorder.configs}
    assert shared == {(4, 0.01, "mlp", 64, "swd")}
    assert {c.output for c in recorder.configs} == {
        str(tmp_path / "runs" / "swd" / loss / f"seed{s}") for loss in ("ce", "l2") for s in (3, 5)
    }
    with pytest.raises(ValueError, match=r"other options \(epochs: 4 -> 5\)"):
        compare("swd", "ce", [3], tmp_path, train_fn=recorder, train_options={"epochs": 5,
                "lr": 0.01})  # fmt: skip


def test_folds_give_one_run_per_seed_and_fold(tmp_path: Path) -> None:
    recorder = Recorder()
    compare("era", "ce", 1, tmp_path, folds=3, train_fn=recorder, progress=False)
    assert [(c.fold, c.num_folds) for c in recorder.configs] == [(0, 3), (1, 3), (2, 3)]
    rows = _csv(tmp_path / "results.csv")
    assert [r["fold"] for r in rows if r["rule"] == "argmax" and r["loss"] == "ce"] == [
        "0",
        "1",
        "2",
    ]
    # The baselines are fitted on every fold's split too.
    prior = [r["fold"] for r in rows if r["rule"] == "argmax" and r["loss"] == "baseline:prior"]
    assert prior == ["0", "1", "2"]
    # Atomic writes leave ordinary file modes (mkstemp's private 0600 would hide them).
    umask = os.umask(0)
    os.umask(umask)
    for name in ("results.csv", "summary.md", "compare.json", "plots/era/metrics.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert "3-fold cross-validation" in (tmp_path / "summary.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_workers_started_from_the_fork_server_train_the_same_runs(tmp_path: Path) -> None:
    # Issue 20: --jobs workers start from a fork server that imported the trainer once (the
    # default start method); their runs equal the same runs trained in this process.
    options = {"epochs": 2, "batch_size": 128}
    kwargs: dict[str, Any] = {"train_options": options, "progress": False, "baselines": False}
    one = compare("lev", "ce,w1", 2, tmp_path / "one", jobs=1, **kwargs)
    two = compare("lev", "ce,w1", 2, tmp_path / "two", jobs=2, **kwargs)
    assert [r.status for r in two.records] == ["done"] * 4
    assert [r.spec for r in two.records] == [r.spec for r in one.records]
    assert [r.metrics for r in two.records] == [r.metrics for r in one.records]


def test_parallel_jobs_match_sequential(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sequential = compare("lev", "ce,l2", 2, tmp_path / "a", train_fn=fake_train, progress=False)
        assert torch.get_num_threads() == 2  # restored after the runs
    finally:
        torch.set_num_threads(before)
    # Tabular runs use one torch thread (a second one only spins on such small models).
    assert {
        json.loads(p.read_text(encoding="utf-8"))["threads"]
        for p in (tmp_path / "a" / "runs").rglob("metrics.json")
    } == {1}
    parallel = compare(
        "lev", "ce,l2", 2, tmp_path / "b", jobs=2, train_fn=fake_train, mp_context="fork",
        progress=False,
    )  # fmt: skip
    assert [r.metrics for r in parallel.records] == [r.metrics for r in sequential.records]
    assert [r.spec for r in parallel.records] == [r.spec for r in sequential.records]
    threads = {
        json.loads(p.read_text(encoding="utf-8"))["threads"]
        for p in (tmp_path / "b" / "runs").rglob("metrics.json")
    }
    assert threads == {max(1, available_cores() // 2)}


def test_digits_is_judged_on_accuracy_only(tmp_path: Path) -> None:
    recorder = Recorder()
    result = compare("digits", "ce,xemd1,xemd2", 2, tmp_path, train_fn=recorder, progress=False)
    assert {c.dataset for c in recorder.configs} == {"digits"}
    assert "10 classes" in result.summary
    assert "have no order: only accuracy is meaningful" in result.summary
    verdict = result.summary.split("**Verdict (digits):**", 1)[1].split("\n\n", 1)[0]
    assert "cross-entropy on accuracy (paired difference xemd" in verdict
    assert "on MAE" not in verdict
    assert (tmp_path / "plots" / "digits" / "metrics.png").is_file()
    assert not (tmp_path / "plots" / "digits" / "per_class_mae.png").exists()


# ------------------------------------------------------------------------------- errors
def test_unknown_loss_lists_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'nope'; valid losses: ce, emd2, .*coral"):
        compare("lev", "ce,nope", 1, tmp_path / "out", train_fn=fake_train)
    assert not (tmp_path / "out").exists()  # detected before anything is written


def test_unknown_dataset_lists_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; valid datasets: .*lev.*digits"):
        compare("lev,mnist", "ce", 1, tmp_path / "out", train_fn=fake_train)
    assert not (tmp_path / "out").exists()


def test_unknown_train_option_is_refused_up_front(tmp_path: Path) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match="epoch"):
        compare("lev", "ce", 1, tmp_path, train_options={"epoch": 3}, train_fn=recorder)
    with pytest.raises(ValueError, match="set by compare itself"):
        compare("lev", "ce", 1, tmp_path, train_options={"seed": 3}, train_fn=recorder)
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("loss", "module", "distribution"),
    [("sord", "dlordinal.losses", "dlordinal"), ("coral", "coral_pytorch.losses", "coral-pytorch")],
)
def test_missing_peer_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loss: str, module: str, distribution: str
) -> None:
    # A None entry in sys.modules makes `import module` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, module.split(".")[0], None)
    recorder = Recorder()
    with pytest.raises(ImportError, match=rf"{loss} need {distribution}.*emdloss\[peers\]"):
        compare("lev", f"ce,{loss}", 1, tmp_path / "out", train_fn=recorder)
    assert recorder.calls == []
    assert not (tmp_path / "out").exists()


def test_peer_table_covers_the_training_registry() -> None:
    from emdloss.vocabulary import PEER_LOSS_NAMES

    assert set(PEER_PACKAGES) == set(PEER_LOSS_NAMES)


def test_failed_run_is_reported_and_others_continue(tmp_path: Path) -> None:
    def flaky(config: Any) -> SimpleNamespace:
        if config.loss == "l2" and config.seed == 1:
            raise RuntimeError("diverged")
        return fake_train(config)

    result = compare("lev", "ce,l2", 2, tmp_path, train_fn=flaky, progress=False)
    assert [r.status for r in result.records] == ["done", "done", "done", "failed"]
    assert "diverged" in (tmp_path / "runs" / "lev" / "l2" / "seed1" / "error.txt").read_text()
    assert "Failed runs (1)" in result.summary and "lev/l2/seed1: RuntimeError: diverged" in (
        result.summary
    )
    # The failed run is retried on the next invocation.
    recorder = Recorder()
    compare("lev", "ce,l2", 2, tmp_path, train_fn=recorder, progress=False)
    assert recorder.calls == [("l2", 1, False)]


def test_cli_train_options_from_config_set_and_flags(tmp_path: Path) -> None:
    from emdloss.compare._cli import _options_from_args

    config = tmp_path / "options.yaml"
    config.write_text("epochs: 7\nlr: 0.02\nbatch-size: 8\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--config", str(config), "--set", "lr=0.05", "--set", "loss_options={alpha2: 0.1}"]
    args = parser.parse_args([*argv, "--batch-size", "16"])
    assert _options_from_args(args) == {
        "epochs": 7,
        "lr": "0.05",  # --set overrides the file; TrainConfig converts the string
        "batch_size": 16,  # named flags override both
        "loss_options": {"alpha2": 0.1},
    }
    # A string option is stored with its type: the same options given as numbers match.
    recorder = Recorder()
    compare("lev", "ce", 1, tmp_path / "o", train_options={"epochs": "7"}, train_fn=recorder)
    compare("lev", "ce", [1], tmp_path / "o", train_options={"epochs": 7}, train_fn=recorder)
    assert [c.epochs for c in recorder.configs] == [7, 7]
