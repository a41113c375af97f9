"""The grouped engine (issue 20): a run trained inside a group equals the same run trained alone.

The reference is :func:`emdloss.training.train` (the per-run path, Lightning). On the CPU the
grouped engine reproduces it bit for bit: the same history, selected epoch, metrics,
predictions and best weights (the stacked layer's backward forms each run's gradient as
``F.linear`` does; see :mod:`emdloss.training.grouped`). The tests therefore compare exactly; a
group that shared initial weights, batch order or optimiser state between its runs would change
the weights of every run and fail them.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("yaml")
pytest.importorskip("lightning")

from emdloss.compare import compare
from emdloss.compare._rows import TIME_KEYS
from emdloss.compare._runner import grouped_line, plan_work
from emdloss.training import TrainConfig, rundir, train
from emdloss.training.grouped import group_key, train_group, why_not_grouped

# Few epochs and a cut training split keep each run at a few seconds on a loaded 2-core machine.
BUDGET: dict[str, Any] = {"epochs": 3, "limit_train": 320, "model": "mlp", "lr": 3e-3}


def _config(root: Path, loss: str, seed: int, **extra: Any) -> TrainConfig:
    # No figures (most of a small run's time): test_a_mixed_group_... checks that they match.
    options = {"dataset": "lev", "plots": False, **BUDGET, **extra}
    return TrainConfig(
        loss=loss, seed=seed, progress=False, output=str(root / f"{loss}_{seed}"), **options
    )


def _metrics(run_dir: Path) -> dict[str, Any]:
    content = json.loads((run_dir / rundir.METRICS_FILE).read_text(encoding="utf-8"))
    content.pop("train_seconds")  # wall time
    return content


def _history(run_dir: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((run_dir / rundir.HISTORY_FILE).open(encoding="utf-8")))
    for row in rows:
        row.pop("epoch_seconds")  # wall time
    return rows


def _weights(run_dir: Path, name: str = rundir.BEST_CHECKPOINT) -> dict[str, torch.Tensor]:
    checkpoint = rundir.load_checkpoint(run_dir / rundir.CHECKPOINT_DIR / name)
    return {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}


def _files(run_dir: Path) -> list[str]:
    return sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())


def assert_same_run(alone: Path, grouped: Path) -> None:
    """Every number a run writes, equal (wall times aside)."""
    assert _files(alone) == _files(grouped)
    assert _metrics(alone) == _metrics(grouped)
    assert _history(alone) == _history(grouped)
    predictions = rundir.PREDICTIONS_FILE
    assert (alone / predictions).read_text() == (grouped / predictions).read_text()
    a, b = _weights(alone), _weights(grouped)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    best = rundir.load_checkpoint(grouped / rundir.CHECKPOINT_DIR / rundir.BEST_CHECKPOINT)
    assert best["epoch"] + 1 == _metrics(grouped)["best_epoch"]


def _train_alone(configs: Sequence[TrainConfig]) -> None:
    for config in configs:
        train(config)


def _check_group(tmp_path: Path, runs: Sequence[tuple[str, int]], **extra: Any) -> None:
    _train_alone([_config(tmp_path / "alone", loss, seed, **extra) for loss, seed in runs])
    results = train_group([_config(tmp_path / "group", loss, seed, **extra) for loss, seed in runs])
    assert all(isinstance(r, rundir.RunResult) for r in results), results
    for loss, seed in runs:
        name = f"{loss}_{seed}"
        assert_same_run(tmp_path / "alone" / name, tmp_path / "group" / name)


def check_company(
    root: Path,
    make: Callable[..., TrainConfig],
    runs: Sequence[tuple[str, int]],
    single: tuple[str, int],
    same: Callable[[Path, Path], None] = assert_same_run,
    **extra: Any,
) -> None:
    """The runs trained alone (``root / "alone"``) equal them trained in reverse order in one
    group, and ``single`` in a group of its own: a run's numbers do not depend on its company."""
    train_group([make(root / "cba", loss, seed, **extra) for loss, seed in runs[::-1]])
    train_group([make(root / "a", *single, **extra)])
    for loss, seed in runs:
        same(root / "alone" / f"{loss}_{seed}", root / "cba" / f"{loss}_{seed}")
    same(root / "alone" / f"{single[0]}_{single[1]}", root / "a" / f"{single[0]}_{single[1]}")


def test_a_mixed_group_equals_each_run_alone(tmp_path: Path) -> None:
    # Two seeds of ce (different splits, initial weights and batch orders), a one-output head
    # (l2), and a loss with per-run state (xemd1's learned ground distance and warm-up).
    # The figures too (the same files; the other tests leave them out).
    _check_group(tmp_path, [("ce", 0), ("ce", 1), ("l2", 0), ("xemd1", 1)], plots=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    "losses", [("emd2", "w1", "ground", "xemd2"), ("corn", "sord", "coral", "triangular")]
)
def test_every_vectorised_loss_family_equals_its_run_alone(
    tmp_path: Path, losses: tuple[str, ...]
) -> None:
    if "corn" in losses:
        pytest.importorskip("dlordinal")
        pytest.importorskip("coral_pytorch")
    _check_group(tmp_path, [(loss, seed) for loss in losses for seed in (0, 1)])


def test_group_order_and_company_do_not_change_a_run(tmp_path: Path) -> None:
    runs = [("ce", 0), ("emd2", 1), ("ce", 2)]
    train_group([_config(tmp_path / "abc", loss, seed) for loss, seed in runs])
    train_group([_config(tmp_path / "cba", loss, seed) for loss, seed in reversed(runs)])
    train_group([_config(tmp_path / "a", "ce", 0)])
    for loss, seed in runs:
        name = f"{loss}_{seed}"
        assert_same_run(tmp_path / "abc" / name, tmp_path / "cba" / name)
    assert_same_run(tmp_path / "abc" / "ce_0", tmp_path / "a" / "ce_0")
    # Different seeds are different runs: their initial and trained weights differ.
    a, b = _weights(tmp_path / "abc" / "ce_0"), _weights(tmp_path / "abc" / "ce_2")
    assert not any(torch.equal(a[k], b[k]) for k in a)


#: The default mlp (two hidden layers, a dropout after each) at p = 0.5; 330 training rows
#: make each epoch's last batch 10 rows, which the stacked layers run run by run.
DROPOUT: dict[str, Any] = {"model_options": {"dropout": 0.5}, "limit_train": 330}


def test_dropout_runs_equal_their_runs_alone_whatever_their_company(tmp_path: Path) -> None:
    # Each run draws its masks as its per-run training draws them (the global generator,
    # reseeded from (seed, epoch) at every epoch start, one draw per dropout layer and step): a
    # run's masks taken from another run, from one generator shared by the group, or drawn in
    # another order would change its every number. The recipe (xemd1) learns its distance from
    # the features after the dropout.
    runs = [("ce", 0), ("emd2", 1), ("xemd1", 0), ("ce", 2)]
    _check_group(tmp_path, runs, **DROPOUT)
    check_company(tmp_path, _config, runs, ("emd2", 1), **DROPOUT)
    # The masks are drawn: without dropout the same run trains to other weights (the same
    # parameters, numbered without the dropout layers).
    train(_config(tmp_path / "plain", "emd2", 1, limit_train=330))
    a, b = _weights(tmp_path / "alone" / "emd2_1"), _weights(tmp_path / "plain" / "emd2_1")
    assert len(a) == len(b) == 6
    assert not any(torch.equal(x, y) for x, y in zip(a.values(), b.values(), strict=True))


def _toy_ldl(tmp_path: Path) -> dict[str, Any]:
    """Options for an ldl: file (a distribution per item) and a one-layer mlp with dropout,
    batches of 32 with a last one of 8 rows."""
    scipy_io = pytest.importorskip("scipy.io")
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    logits = np.stack([x[:, 0], -x[:, 0], x[:, 1], np.zeros(len(x))], axis=1)
    labels = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scipy_io.savemat(tmp_path / "toy.mat", {"features": x, "labels": labels})
    return {
        "dataset": f"ldl:{tmp_path / 'toy.mat'}",
        "model_options": {"hidden_sizes": [16], "dropout": 0.5},
        "limit_train": 200,
        "batch_size": 32,
    }


def test_dropout_runs_on_distribution_targets_equal_their_runs_alone(tmp_path: Path) -> None:
    # ce and emd2 train on the distributions, kl is measured.
    options = _toy_ldl(tmp_path)
    assert _config(tmp_path, "ce", 0, **options).dataset.startswith("ldl:")
    _check_group(tmp_path, [("ce", 0), ("emd2", 1), ("emd2", 2)], **options)
    assert "distribution" in _metrics(tmp_path / "group" / "emd2_1")


def test_ensemble_runs_equal_their_runs_alone_whatever_their_company(tmp_path: Path) -> None:
    # Deep ensembles (--ensemble 3): each member is a slot of the stack, built under the run's
    # seed in member order; the members of a run draw their dropout masks from the run's one
    # generator in the order of its per-run forward (member 0's two layers, then member 1's,
    # ...), so the default mlp's two dropout layers would catch masks drawn layer by layer
    # across members. A last batch of 10 rows runs the stacked layers slot by slot. The loss is
    # the sum of the members' (the gradient), its mean is what the history reports.
    options = {**DROPOUT, "ensemble": 3}
    runs = [("ce", 0), ("emd2", 1), ("coral", 0)]
    _check_group(tmp_path, runs, **options)
    check_company(tmp_path, _config, runs, ("emd2", 1), **options)
    weights = _weights(tmp_path / "group" / "emd2_1")
    assert {key.split(".")[2] for key in weights} == {"0", "1", "2"}  # model.members.<k>...
    # Different members (different initial weights), not copies of one.
    heads = [weights[f"model.members.{k}.head.weight"] for k in range(3)]
    assert not torch.equal(heads[0], heads[1])
    assert _metrics(tmp_path / "group" / "emd2_1")["ensemble"] == 3
    # An ensemble with a learned ground distance fails alone, with the per-run path's message.
    results = train_group([_config(tmp_path / "x", loss, 0, **options) for loss in ("ce", "xemd1")])
    assert isinstance(results[0], rundir.RunResult)
    assert "--ensemble 3 with --loss xemd1" in str(results[1])


def test_ensembles_on_distribution_targets_equal_their_runs_alone(tmp_path: Path) -> None:
    # The Movie protocol in small: an ldl: file, ensembles of one-layer mlps with dropout.
    options = {**_toy_ldl(tmp_path), "ensemble": 2}
    _check_group(tmp_path, [("ce", 0), ("emd2", 1), ("nima", 1)], **options)
    assert "distribution" in _metrics(tmp_path / "group" / "nima_1")


def test_a_group_is_cut_where_a_stacked_parameter_would_pass_the_mmap_threshold() -> None:
    from types import SimpleNamespace

    from torch import nn

    from emdloss.training.grouped import STACK_BYTES, _stack_parts

    def run(networks: int, inputs: int) -> Any:  # a layer of inputs x 256 float32 weights
        members = [nn.Linear(inputs, 256) for _ in range(networks)]
        return SimpleNamespace(task=SimpleNamespace(members=members))

    movie = 1869 * 256 * 4  # Movie's first layer: 1.9 MB a network
    assert 12 * movie <= STACK_BYTES < 20 * movie  # 12 were as fast a network as 1, 20 not
    cpu = torch.device("cpu")
    ensembles = [(i, run(5, 1869)) for i in range(5)]  # 9.6 MB a run: two a part
    assert [[i for i, _ in part] for part in _stack_parts(ensembles, cpu)] == [[0, 1], [2, 3], [4]]
    assert len(_stack_parts(ensembles, torch.device("cuda"))) == 1  # a caching allocator
    small = [(i, run(1, 8)) for i in range(50)]  # the tables' mlps: one part
    assert len(_stack_parts(small, cpu)) == 1
    huge = [(0, run(2, 20000)), (1, run(1, 8))]  # a run above the bound still trains, alone
    assert [[i for i, _ in part] for part in _stack_parts(huge, cpu)] == [[0], [1]]


def test_one_diverging_run_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from emdloss.training import losses

    forward = losses._L2.forward

    def diverging(self: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        value: torch.Tensor = forward(self, *args, **kwargs)
        return value * float("nan")

    monkeypatch.setattr(losses._L2, "forward", diverging)
    results = train_group([_config(tmp_path / "g", "l2", 0), _config(tmp_path / "g", "ce", 1)])
    assert isinstance(results[0], FloatingPointError)
    assert "training loss is nan at epoch 0, batch 0" in str(results[0])
    assert not (tmp_path / "g" / "l2_0" / rundir.METRICS_FILE).exists()
    train(_config(tmp_path / "alone", "ce", 1))
    assert_same_run(tmp_path / "alone" / "ce_1", tmp_path / "g" / "ce_1")


def test_grouped_runs_evaluate_like_trained_runs(tmp_path: Path) -> None:
    from emdloss.training import evaluate, run_deferred_test

    train_group([_config(tmp_path, "emd2", 0)])
    again = evaluate(tmp_path / "emd2_0", progress=False)
    assert again["test"] == _metrics(tmp_path / "emd2_0")["test"]
    # A grid's runs train without their test split; the chosen ones are tested afterwards.
    train_group([_config(tmp_path / "deferred", "emd2", 0, evaluate_test=False)])
    deferred = tmp_path / "deferred" / "emd2_0"
    assert "test" not in _metrics(deferred)
    run_deferred_test(deferred)
    assert _metrics(deferred) == _metrics(tmp_path / "emd2_0")
    assert (deferred / "predictions_test.csv").read_text() == (
        tmp_path / "emd2_0" / "predictions_test.csv"
    ).read_text()


def test_what_cannot_be_grouped_says_why(tmp_path: Path) -> None:
    assert why_not_grouped(_config(tmp_path, "ce", 0)) is None
    assert why_not_grouped(_config(tmp_path, "coral", 0)) is None  # its own head, run by run
    extra = _config(tmp_path, "xemd1", 0, loss_options={"feature_pass": "extra"})
    assert "extra feature pass" in str(why_not_grouped(extra))
    assert why_not_grouped(_config(tmp_path, "ce", 0, model_options={"dropout": 0.1})) is None
    assert why_not_grouped(_config(tmp_path, "ce", 0, model="cnn")) is None
    dropout = _config(tmp_path, "ce", 0, model="cnn", model_options={"dropout": 0.1})
    assert why_not_grouped(dropout) is None
    assert why_not_grouped(_config(tmp_path, "ce", 0, ensemble=3)) is None
    batchnorm = _config(tmp_path, "ce", 0, model_options={"batchnorm": True})
    assert "batch norm" in str(why_not_grouped(batchnorm))
    assert "resnet18" in str(why_not_grouped(_config(tmp_path, "ce", 0, model="resnet18")))
    # Seeds and losses vary inside a group; the budget does not.
    assert group_key(_config(tmp_path, "ce", 0)) == group_key(_config(tmp_path / "x", "l2", 3))
    assert group_key(_config(tmp_path, "ce", 0)) != group_key(_config(tmp_path, "ce", 0, lr=0.1))
    with pytest.raises(ValueError, match="differ in options"):
        train_group([_config(tmp_path, "ce", 0), _config(tmp_path, "ce", 1, lr=0.1)])


def test_plan_work_groups_and_names_the_fallbacks(tmp_path: Path) -> None:
    from emdloss.compare._plan import RunSpec

    options = {**BUDGET, "progress": False}
    batchnorm = {**options, "model_options": {"batchnorm": True}}
    jobs = [
        (RunSpec("lev", loss, seed), tmp_path / loss / str(seed), opts, 1)
        for loss, opts in (("ce", options), ("emd2", batchnorm), ("coral", options))
        for seed in (0, 1)
    ]
    works, note = plan_work(jobs, range(len(jobs)), "grouped")
    assert works == [("group", [0, 1, 4, 5]), ("run", [2]), ("run", [3])]
    assert note.count("\n") == 0
    assert "per-run engine for 2 run(s) for mlp with batch norm" in note
    assert "lev/emd2/seed0" in note
    assert plan_work(jobs, [0, 1], "per-run") == ([("run", [0]), ("run", [1])], "")
    assert grouped_line(works) == "compare: grouped engine for 4 run(s) in 1 group(s) of 4"


def _rows(path: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((path / "results.csv").open(encoding="utf-8")))
    return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in rows]


@pytest.mark.slow
def test_compare_grouped_equals_per_run_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kwargs: dict[str, Any] = dict(progress=False, baselines=False, train_options=BUDGET)
    per_run = compare("lev", "ce,l2,coral", 2, tmp_path / "per", engine="per-run", **kwargs)
    grouped = compare("lev", "ce,l2,coral", 2, tmp_path / "grp", **kwargs)
    assert "per-run engine" not in capsys.readouterr().err  # every run in one group
    assert [r.status for r in grouped.records] == ["done"] * 6
    assert _rows(tmp_path / "per") == _rows(tmp_path / "grp")
    for record in per_run.records:
        assert_same_run(record.run_dir, tmp_path / "grp" / record.spec.relative_dir)
    # Resume at run granularity: a finished run is skipped; one without metrics.json (its
    # grouped checkpoints hold no loop state) is trained again, in a group.
    victim = tmp_path / "grp" / "runs" / "lev" / "l2" / "seed1"
    (victim / rundir.METRICS_FILE).unlink()
    again = compare("lev", "ce,l2,coral", 2, tmp_path / "grp", **kwargs)
    assert sorted(r.status for r in again.records) == ["done"] + ["skipped"] * 5
    assert _rows(tmp_path / "grp") == _rows(tmp_path / "per")
    assert_same_run(tmp_path / "per" / "runs" / "lev" / "l2" / "seed1", victim)


@pytest.mark.slow
def test_ray_sends_groups_and_matches_local(tmp_path: Path, ray_session: None) -> None:
    # ray_session (conftest): one local cluster for the Ray tests, joined by compare.
    kwargs: dict[str, Any] = dict(progress=False, baselines=False, train_options=BUDGET)
    compare("lev", "ce,emd2", 2, tmp_path / "local", **kwargs)
    remote = compare("lev", "ce,emd2", 2, tmp_path / "ray", executor="ray", **kwargs)
    assert [r.status for r in remote.records] == ["done"] * 4
    assert _rows(tmp_path / "local") == _rows(tmp_path / "ray")
    shutil.rmtree(tmp_path / "ray" / "runs" / "lev" / "emd2" / "seed0")
    again = compare("lev", "ce,emd2", 2, tmp_path / "ray", executor="ray", **kwargs)
    assert sorted(r.status for r in again.records) == ["done"] + ["skipped"] * 3
    assert _rows(tmp_path / "local") == _rows(tmp_path / "ray")


def test_a_grouped_checkpoint_is_never_resumed(tmp_path: Path) -> None:
    from emdloss.compare._plan import RunSpec
    from emdloss.compare._runner import execute
    from emdloss.errors import UserError

    config = _config(tmp_path, "ce", 0)
    train_group([config])
    run_dir = Path(config.output)
    finished = _metrics(run_dir)
    (run_dir / rundir.METRICS_FILE).unlink()  # as if interrupted after the checkpoints
    with pytest.raises(UserError, match="grouped engine"):
        train(TrainConfig.from_dict({"resume": True}, base=config))
    # The per-run engine trains such a run again from the start (the same numbers).
    options = {**BUDGET, "progress": False}
    record = execute(RunSpec("lev", "ce", 0), run_dir, options, None)
    assert record.status == "done"
    assert _metrics(run_dir) == finished


@pytest.mark.parametrize(
    ("argv", "engine"), [([], "grouped"), (["--engine", "per-run"], "per-run")]
)
def test_cli_engine_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], engine: str
) -> None:
    import argparse
    from types import SimpleNamespace

    from emdloss.compare import _compare as compare_module
    from emdloss.compare import add_arguments, run

    seen: dict[str, Any] = {}

    def fake(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return SimpleNamespace(
            summary="", table="", records=[], files=[], wall_seconds=0.0, failed=[], rows=[]
        )

    monkeypatch.setattr(compare_module, "compare", fake)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    run(parser.parse_args([*argv, "--output", str(tmp_path)]))
    assert seen["engine"] == engine


def test_groups_are_cut_for_parallel_workers_only_when_needed() -> None:
    from emdloss.compare._runner import MIN_PIECE_RUNS, _split_groups

    n = MIN_PIECE_RUNS  # the fewest runs of a piece (tests/compare/test_runner.py: --jobs)
    works = [("group", list(range(2 * n))), ("run", [2 * n])]
    assert _split_groups(works, 2) == works  # already two pieces of work for two workers
    assert _split_groups([("group", list(range(2 * n)))], 2) == [
        ("group", list(range(n))),
        ("group", list(range(n, 2 * n))),
    ]
    assert _split_groups([("group", [0, 1, 2])], 4) == [("group", [0, 1, 2])]
