"""Training on distribution targets: which losses take them (and use them exactly, against
oracles), the refusal of the others, and train end to end with the distribution measures."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")  # emdloss.training: the train extra
pytest.importorskip("scipy")  # oracle

import scipy.stats

from emdloss.errors import UserError
from emdloss.training.losses import build_loss
from emdloss.vocabulary import DISTRIBUTION_LOSS_NAMES, LOSS_NAMES

DATA = Path(os.environ.get("EMDLOSS_DATA", Path(__file__).resolve().parents[3] / "shared/data"))
C = 5


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, C, generator=gen, dtype=torch.float64)
    target = torch.distributions.Dirichlet(torch.ones(C, dtype=torch.float64)).sample((7,))
    return logits, target


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy()


def _loss(name: str, logits, dist, **kwargs):
    loss = build_loss(name, C, train_targets=list(range(C)), **kwargs).double()
    hard = dist.argmax(1)
    return loss(logits, hard, dist)


# ---------------------------------------------------------------------------- the registry
def test_every_loss_says_whether_it_takes_a_distribution():
    for name in LOSS_NAMES:
        loss = build_loss(name, C, train_targets=list(range(C)))
        assert loss.supports_soft_targets == (name in DISTRIBUTION_LOSS_NAMES), name


def test_soft_cross_entropy_is_kl_up_to_the_target_entropy(batch):
    logits, t = batch
    p = _np(torch.softmax(logits, 1))
    kl = scipy.stats.entropy(_np(t), p, axis=1)  # sum t ln(t / p)
    entropy = scipy.stats.entropy(_np(t), axis=1)
    assert float(_loss("ce", logits, t)) == pytest.approx(float(np.mean(kl + entropy)), rel=1e-12)


def test_emd2_is_the_mean_squared_cdf_difference(batch):
    logits, t = batch
    diff = np.cumsum(_np(torch.softmax(logits, 1)), 1) - np.cumsum(_np(t), 1)
    expected = np.mean(np.mean(diff**2, axis=1))
    assert float(_loss("emd2", logits, t)) == pytest.approx(expected, rel=1e-12)


def test_w1_matches_scipy_wasserstein(batch):
    logits, t = batch
    p = _np(torch.softmax(logits, 1))
    levels = np.arange(C, dtype=float)
    expected = np.mean(
        [scipy.stats.wasserstein_distance(levels, levels, p[i], _np(t)[i]) for i in range(len(p))]
    )
    assert float(_loss("w1", logits, t)) == pytest.approx(expected, rel=1e-10)


def test_nima_is_root_mean_squared_cdf_difference_per_item(batch):
    logits, t = batch
    diff = np.cumsum(_np(torch.softmax(logits, 1)), 1) - np.cumsum(_np(t), 1)
    expected = np.mean(np.sqrt(np.mean(diff**2, axis=1)))
    assert float(_loss("nima", logits, t)) == pytest.approx(expected, rel=1e-12)


def test_nima_gradients(batch):
    logits, t = batch
    loss = build_loss("nima", C).double()
    hard = t.argmax(1)
    torch.autograd.gradcheck(lambda x: loss(x, hard, t), (logits.clone().requires_grad_(),))
    torch.autograd.gradgradcheck(lambda x: loss(x, hard, t), (logits.clone().requires_grad_(),))


def test_dlordinal_emd_takes_the_distribution(batch):
    logits, t = batch
    diff = np.cumsum(_np(torch.softmax(logits, 1)), 1) - np.cumsum(_np(t), 1)
    expected = np.mean(np.sum(diff**2, axis=1))
    assert float(_loss("dlordinal_emd", logits, t)) == pytest.approx(expected, rel=1e-6)


def test_l2_regresses_the_mean_level(batch):
    _, t = batch
    values = torch.linspace(0, 4, 7, dtype=torch.float64)[:, None]
    loss = build_loss("l2", C).double()
    expected = np.mean((_np(values[:, 0]) - _np(t) @ np.arange(C)) ** 2)
    assert float(loss(values, t.argmax(1), t)) == pytest.approx(expected, rel=1e-12)


def test_recipe_warmup_is_soft_cross_entropy(batch):
    logits, t = batch
    assert float(_loss("xemd1", logits, t)) == pytest.approx(float(_loss("ce", logits, t)))


def test_ground_sinkhorn_approximates_w1_from_above(batch):
    logits, t = batch
    exact = float(_loss("w1", logits, t))
    approx = float(_loss("ground", logits, t))
    assert exact - 1e-6 <= approx <= exact + 0.05


def test_functional_core_takes_distribution_targets(batch):
    """The README's claim: ``target`` may be class distributions (N, C)."""
    from emdloss.functional import emd, squared_emd

    logits, t = batch
    p = _np(torch.softmax(logits, 1))
    diff = np.cumsum(p, 1) - np.cumsum(_np(t), 1)
    per_item = squared_emd(logits, t, reduction="none", normalization="sum")
    np.testing.assert_allclose(_np(per_item), np.sum(diff**2, axis=1), rtol=1e-12)
    levels = np.arange(C, dtype=float)
    w1 = [scipy.stats.wasserstein_distance(levels, levels, p[i], _np(t)[i]) for i in range(7)]
    np.testing.assert_allclose(_np(emd(logits, t, p=1, reduction="none")), w1, rtol=1e-10)


@pytest.mark.parametrize("name", [n for n in LOSS_NAMES if n not in DISTRIBUTION_LOSS_NAMES])
def test_hard_only_losses_refuse_distribution_targets_in_one_line(tmp_path, name):
    from emdloss.training import TrainConfig
    from emdloss.training._build import build_task, load_data

    config = TrainConfig(dataset=f"csv:{_table(tmp_path)}", loss=name, output=str(tmp_path / "r"))
    config = TrainConfig.from_dict({"data_options": {"count_columns": "votes_"}}, base=config)
    with pytest.raises(UserError, match=f"loss '{name}' takes class labels only") as info:
        build_task(config, load_data(config))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- end to end
def _table(tmp_path: Path, n: int = 90) -> Path:
    """A small table whose vote histograms depend on two features."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    centre = 2 + x[:, 0] - 0.5 * x[:, 1]
    logits = -((np.arange(C)[None, :] - centre[:, None]) ** 2) / 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    parts = ["train"] * (n - 30) + ["val"] * 15 + ["test"] * 15
    path = tmp_path / "votes.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "split", *[f"votes_{k + 1}" for k in range(C)]])
        for i in range(n):
            votes = rng.multinomial(20, probs[i])
            writer.writerow([f"{x[i, 0]:.4f}", f"{x[i, 1]:.4f}", parts[i], *votes])
    return path


def test_train_end_to_end_on_a_vote_table(tmp_path):
    from emdloss.metrics.distribution import DISTRIBUTION_METRIC_KEYS
    from emdloss.training import TrainConfig, train

    out = tmp_path / "run"
    config = TrainConfig(
        dataset=f"csv:{_table(tmp_path)}",
        loss="emd2",
        epochs=3,
        batch_size=16,
        output=str(out),
        progress=False,
        data_options={"count_columns": "votes_"},
    )
    result = train(config)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["monitor"] == "val_kl"
    for part in ("val", "test"):
        assert list(metrics["distribution"][part]) == list(DISTRIBUTION_METRIC_KEYS)
        assert set(metrics["noise_floor"][part]["mean"]) == set(DISTRIBUTION_METRIC_KEYS)
        baselines = metrics["distribution_baselines"][part]
        assert list(baselines) == ["mean", "aa_knn", "linear_kl"]
        assert list(baselines["aa_knn"]) == list(DISTRIBUTION_METRIC_KEYS)
    assert result.metrics["distribution"] == metrics["distribution"]
    with (out / "predictions_test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 15
    probs = [f"prob_{k + 1}" for k in range(C)]
    targets = [f"target_prob_{k + 1}" for k in range(C)]
    assert set(probs + targets) <= set(rows[0])
    # The target columns are the file's vote histograms, normalised.
    assert abs(sum(float(rows[0][c]) for c in targets) - 1) < 1e-5
    assert (out / "distributions_test.png").stat().st_size > 0
    history = (out / "history.csv").read_text().splitlines()[0]
    assert "val_kl" in history and "val_emd2" in history
    # `emdloss plot RUN_DIR` (and compare --plots runs) draws it again from the run's files.
    from emdloss.training import write_run_plots

    (out / "distributions_test.png").unlink()
    assert out / "distributions_test.png" in write_run_plots(out)
    assert (out / "distributions_test.png").stat().st_size > 0


def _image_votes(tmp_path: Path, n: int = 90) -> Path:
    """MEBeauty's layout in small: an ``image`` column relative to the CSV, the official
    ``split``, ``votes_1`` .. ``votes_5``; each face's brightness sets where its votes fall."""
    from PIL import Image

    rng = np.random.default_rng(0)
    centre = rng.uniform(0, C - 1, size=n)
    logits = -((np.arange(C)[None, :] - centre[:, None]) ** 2) / 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    parts = ["train"] * (n - 30) + ["val"] * 15 + ["test"] * 15
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "ratings.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "split", *[f"votes_{k + 1}" for k in range(C)]])
        for i in range(n):
            grey = 30 + 45 * centre[i] + rng.normal(0, 8, size=(10, 10, 1))
            pixels = np.clip(np.repeat(grey, 3, axis=2), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / f"{i}.png")
            votes = rng.multinomial(20, probs[i])
            writer.writerow([f"images/{i}.png", parts[i], *votes])
    return path


def test_train_end_to_end_on_an_image_vote_csv(tmp_path, capsys):
    """The issue's command on images (`--data-option count_columns=votes_`, nothing else
    about the file): the measures, the level order and vote summary, the three baselines on
    pixels, the noise floor, target columns beside the predicted ones and the plot."""
    from emdloss.cli import main
    from emdloss.metrics.distribution import DISTRIBUTION_METRIC_KEYS

    csv_path = _image_votes(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--dataset", f"images:{csv_path}", "--data-option", "count_columns=votes_"]
    args += ["--data-option", "image_size=8", "--loss", "emd2", "--epochs", "2"]
    code = main([*args, "--batch-size", "16", "--output", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.err + captured.out  # the data description goes to stderr
    assert "classes in order: 1 < 2 < 3 < 4 < 5" in printed
    assert "mean votes per item 20.0" in printed and "mean entropy" in printed
    assert "inputs: images 3x8x8" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for part in ("val", "test"):
        assert list(metrics["distribution"][part]) == list(DISTRIBUTION_METRIC_KEYS)
        assert list(metrics["distribution_baselines"][part]) == ["mean", "aa_knn", "linear_kl"]
        assert set(metrics["noise_floor"][part]["mean"]) == set(DISTRIBUTION_METRIC_KEYS)
    test = metrics["distribution_baselines"]["test"]
    # The pixels carry the target: both fitted baselines beat the training mean on KL.
    assert test["aa_knn"]["kl"] < test["mean"]["kl"]
    assert test["linear_kl"]["kl"] < test["mean"]["kl"]
    assert test["mean"]["lcc"] == 0.0  # one distribution for every face
    for line in ("baseline: aa_knn", "baseline: linear_kl", "noise floor (20.0 votes/item)"):
        assert line in printed
    with (out / "predictions_test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [f"images/{i}.png" for i in range(75, 90)]
    votes = {
        f"images/{i}.png": line.split(",")[2:]
        for i, line in enumerate(csv_path.read_text().splitlines()[1:])
    }
    for row in rows:
        counts = np.asarray(votes[row["id"]], dtype=float)
        target = [float(row[f"target_prob_{k + 1}"]) for k in range(C)]
        np.testing.assert_allclose(target, counts / counts.sum(), atol=1e-5)
        assert abs(sum(float(row[f"prob_{k + 1}"]) for k in range(C)) - 1) < 1e-4
    assert (out / "distributions_test.png").stat().st_size > 0


def test_image_baselines_fit_on_averaged_pixels(tmp_path):
    from emdloss.data import load_dataset
    from emdloss.training._context import BASELINE_PIXELS, baseline_features

    ds = load_dataset(f"images:{_image_votes(tmp_path, n=40)}", count_columns="votes_")
    x = baseline_features(ds.test, ds.kind)
    assert ds.input_shape == (3, 64, 64) and x.shape == (15, 3 * BASELINE_PIXELS**2)
    # Each feature is the mean of a 4 x 4 block of the 64 x 64 image.
    image = ds.test.input(3).double()
    block = image[:, 4:8, 8:12].mean(dim=(1, 2))
    np.testing.assert_allclose(x[3].reshape(3, 16, 16)[:, 1, 2], block.numpy(), rtol=1e-12)
    small = load_dataset(f"images:{tmp_path / 'ratings.csv'}", count_columns="votes_", image_size=6)
    assert baseline_features(small.val, small.kind).shape == (15, 3 * 6 * 6)


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "ldl/Movie.mat").is_file(), reason="Movie.mat not present")
def test_movie_smoke_run_writes_the_measures(tmp_path, capsys):
    from emdloss.cli import main

    out = tmp_path / "movie"
    code = main(
        [
            "train",
            "--dataset",
            f"ldl:{DATA / 'ldl/Movie.mat'}",
            "--loss",
            "emd2",
            "--epochs",
            "1",
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "test distribution measures" in printed and "chebyshev" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["distribution"]["test"]["kl"] < 0.2  # the training mean scores 0.127


@pytest.mark.slow
@pytest.mark.skipif(
    not (DATA / "mebeauty/ratings.csv").is_file(), reason="MEBeauty images not present"
)
@pytest.mark.filterwarnings("ignore:.*official split")
def test_mebeauty_images_smoke_run_writes_the_measures(tmp_path, capsys):
    """The issue's command on the real faces, at 16 x 16 for one epoch (about 20 s)."""
    from emdloss.cli import main

    out = tmp_path / "mebeauty"
    args = ["train", "--dataset", f"images:{DATA / 'mebeauty/ratings.csv'}"]
    args += ["--data-option", "count_columns=votes_", "--loss", "emd2", "--epochs", "1"]
    code = main([*args, "--data-option", "image_size=16", "--output", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "baseline: linear_kl" in printed and "noise floor (24.3 votes/item)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distribution_baselines"]["test"]["mean"]["lcc"] == 0.0
    assert 0.3 < metrics["distribution"]["test"]["kl"] < 0.8  # the training mean scores 0.458
    header = (out / "predictions_test.csv").read_text().splitlines()[0].split(",")
    assert "prob_10" in header and "target_prob_10" in header
    assert len((out / "predictions_test.csv").read_text().splitlines()) == 1 + 506


@pytest.mark.slow
def test_compare_reports_distribution_measures_and_paired_verdicts(tmp_path, monkeypatch):
    import emdloss.training
    from emdloss.compare import compare

    fits = []
    fit = emdloss.training.distribution_baseline_scores

    def counted(dataset, *args):
        fits.append(dataset)
        return fit(dataset, *args)

    monkeypatch.setattr(emdloss.training, "distribution_baseline_scores", counted)
    # Fitted here, where the fits are counted, not in compare's side process.
    monkeypatch.setattr("emdloss.compare._compare.side_process", lambda *args: None)
    out = tmp_path / "cmp"
    result = compare(
        f"csv:{_table(tmp_path)}",
        "ce,emd2",
        2,
        out,
        train_options={"epochs": 2, "batch_size": 16, "data_options": {"count_columns": "votes_"}},
        progress=False,
    )
    lines = (out / "distribution_results.csv").read_text().splitlines()
    assert lines[0].startswith("dataset,loss,seed,fold,chebyshev,clark,canberra,kl")
    losses = [line.split(",")[1] for line in lines[1:]]
    assert losses.count("ce") == 2 and losses.count("emd2") == 2
    assert losses.count("noise floor") == 2  # once per seed, paired like the losses
    assert losses.count("baseline:aa_knn") == 2 and losses.count("baseline:linear_kl") == 2
    assert len(fits) == 1  # the official split is the same for both seeds: fitted once
    # Fitted once per seed by compare, not in every run.
    run = json.loads(next(out.rglob("metrics.json")).read_text())
    assert "distribution_baselines" not in run and "noise_floor" in run
    summary = result.summary
    assert "## Distribution targets" in summary and "| ce | " in summary
    assert "Paired difference loss - ce" in summary and "**Verdict (" in summary
    assert "**Against the LDL baselines (" in summary and "| baseline:aa_knn |" in summary
    assert (
        "emd2 ties with ce on kl" in summary
        or "emd2 beats ce on kl" in summary
        or ("emd2 loses to ce on kl" in summary)
    )
    assert "plug-in estimate" in summary  # what the noise floor is, said as it is
    # The validated rule of runs selected on KL is chosen on validation MAE, not left empty.
    validated = [
        r
        for r in csv.DictReader((out / "results.csv").open())
        if r["rule"] == "validated" and r["loss"] == "emd2"
    ]
    assert len(validated) == 2 and all(r["mae"] not in ("", "nan") for r in validated)
    # The printed verdict table answers on the measure the runs were selected on (KL), not on
    # the MAE of the median level; the overview shows a few items' histograms per loss.
    header, _, emd2_line = result.table.splitlines()
    assert header.split()[4] == "kl" and "ce" in emd2_line  # "data set" is two words
    mean_kl = np.mean(
        [
            float(r["kl"])
            for r in csv.DictReader((out / "distribution_results.csv").open())
            if r["loss"] == "emd2"
        ]
    )
    assert emd2_line.split()[3] == f"{mean_kl:.4f}"
    assert next(out.rglob("plots/*/distributions_test.png")).stat().st_size > 0


# ---------------------------------------------------------------------------- vote weights
def test_weighted_sampler_draws_items_in_proportion_to_their_votes():
    from emdloss.training._sampling import EpochWeightedSampler

    votes = torch.tensor([1.0, 2.0, 0.0, 5.0])
    sampler = EpochWeightedSampler(range(4), votes, seed=3)
    counts = np.zeros(4)
    for epoch in range(2000):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == 4
        counts += np.bincount(drawn, minlength=4)
    share = counts / counts.sum()
    np.testing.assert_allclose(share, [1 / 8, 2 / 8, 0.0, 5 / 8], atol=0.01)
    sampler.set_epoch(7)
    assert list(sampler) == list(sampler)  # a pure function of (seed, epoch): resumable


def test_vote_weights_sample_by_votes_and_refuse_proportions(tmp_path):
    from emdloss.training import TrainConfig
    from emdloss.training._build import load_data, make_datamodule

    base = {
        "dataset": f"csv:{_table(tmp_path)}",
        "loss": "emd2",
        "data_options": {"count_columns": "votes_"},
        "output": str(tmp_path / "w"),
        "progress": False,
    }
    config = TrainConfig.from_dict({**base, "vote_weights": True, "epochs": 1})
    module = make_datamodule(config, load_data(config))
    assert module.weights is not None and float(module.weights.min()) == 20.0
    assert type(module.train_dataloader().sampler).__name__ == "EpochWeightedSampler"

    labels = np.random.default_rng(0).dirichlet(np.ones(4), size=40)
    import scipy.io

    scipy.io.savemat(tmp_path / "p.mat", {"features": np.ones((40, 2)), "labels": labels})
    config = TrainConfig.from_dict(
        {**base, "dataset": f"ldl:{tmp_path / 'p.mat'}", "data_options": {}, "vote_weights": True}
    )
    with pytest.raises(UserError, match="--vote-weights needs vote counts"):
        make_datamodule(config, load_data(config))


@pytest.mark.slow
def test_compare_runs_the_ldl_protocol_on_a_mat_file(tmp_path):
    """k-fold cross-validation per seed on an ldl: file, baselines paired by (seed, fold)."""
    import scipy.io

    from emdloss.compare import compare

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    logits = np.stack([x[:, 0], -x[:, 0], x[:, 1], np.zeros(60)], axis=1)
    labels = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scipy.io.savemat(tmp_path / "toy.mat", {"features": x, "labels": labels})
    result = compare(
        f"ldl:{tmp_path / 'toy.mat'}",
        "ce,nima",
        1,
        tmp_path / "cmp",
        folds=3,
        # Runs that fit the baselines themselves too: compare's own fit replaces theirs, one row
        # per baseline and fold (the compare audit found every baseline row twice).
        train_options={"epochs": 1, "batch_size": 16, "ldl_baselines": True},
        progress=False,
    )
    rows = list(csv.DictReader((tmp_path / "cmp" / "distribution_results.csv").open()))
    folds = {(r["loss"], r["fold"]) for r in rows}
    assert {("ce", str(k)) for k in range(3)} <= folds
    assert [r["loss"] for r in rows].count("baseline:aa_knn") == 3
    assert {("baseline:aa_knn", str(k)) for k in range(3)} <= folds
    assert "noise floor" not in {r["loss"] for r in rows}  # proportions: no vote counts
    assert "n=3" in result.summary


# ---------------------------------------------------------------------------- after training
# Found by the after-training audit: each of these was silently wrong or a dead end.
def _trained_vote_run(tmp_path: Path, epochs: int) -> tuple[Path, Any]:
    """The vote table and the config of a finished emd2 run on it in ``tmp_path / "run"``."""
    from emdloss.training import TrainConfig, train

    path = _table(tmp_path)
    config = TrainConfig(
        dataset=f"csv:{path}",
        loss="emd2",
        epochs=epochs,
        batch_size=16,
        output=str(tmp_path / "run"),
        progress=False,
        data_options={"count_columns": "votes_"},
    )
    train(config)
    return path, config


def test_evaluate_and_resume_refuse_data_that_changed_since_training(tmp_path):
    from emdloss.training import TrainConfig, evaluate, train

    path, config = _trained_vote_run(tmp_path, epochs=2)
    assert evaluate(tmp_path / "run")["distribution"]["test"]["kl"] > 0  # the same data: fine
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, *lines[1:11]]) + "\n")  # ten more training rows
    with pytest.raises(
        UserError,
        match=r"data changed since the run was trained \(the train split has 70 rows, recorded 60",
    ):
        evaluate(tmp_path / "run")
    with pytest.raises(UserError, match="data changed since the run was trained"):
        train(TrainConfig.from_dict({"resume": True, "epochs": 3}, base=config))


def test_predict_reads_new_rows_as_the_run_read_its_own(tmp_path, recwarn):
    from emdloss.training import TrainConfig, predict, train

    rng = np.random.default_rng(0)
    rows = ["a;b;grade"]
    for i in range(80):
        a, b = rng.normal(), rng.normal()
        cell = "" if i % 9 == 0 else f"{b:.3f}"  # empty cells, imputed by the run
        rows.append(f"{a:.3f};{cell};{int(a > 0) + int(a > 1)}")
    path = tmp_path / "semi.csv"
    path.write_text("\n".join(rows) + "\n")
    options = {"delimiter": ";", "missing": "impute", "target": "grade"}
    train(
        TrainConfig(
            dataset=f"csv:{path}",
            loss="ce",
            epochs=1,
            output=str(tmp_path / "run"),
            progress=False,
            data_options={k: v for k, v in options.items() if k != "target"},
            target="grade",
        )
    )
    new = tmp_path / "new" / "rows.csv"
    new.parent.mkdir()
    new.write_text("a;b\n0.5;\n-1.0;0.2\n")
    out = predict(tmp_path / "run", str(new))  # one path, not a sequence of characters
    assert len(out) == 2 and out[0]["id"] == "line 2"
    assert any(
        "1 empty numeric cell(s) filled with the training median" in str(w.message) for w in recwarn
    )
    assert [r["id"] for r in predict(tmp_path / "run", new.parent)] == [
        "line 2",
        "line 3",
    ]  # a folder of CSVs
    with pytest.raises(UserError, match="no CSV files found under"):
        predict(tmp_path / "run", [tmp_path / "run" / "checkpoints"])


def test_resume_where_nothing_ran_says_it_starts_a_new_run(tmp_path, capsys):
    from emdloss.cli import main

    args = [
        "train",
        "--dataset",
        f"csv:{_table(tmp_path)}",
        "--data-option",
        "count_columns=votes_",
    ]
    args += ["--epochs", "1", "--no-progress", "--no-plots", "--output", str(tmp_path / "typo")]
    assert main([*args, "--resume"]) == 0
    assert "nothing to resume in" in capsys.readouterr().err
    # evaluate prints the validation split's distribution measures too, not only the test's.
    assert main(["evaluate", str(tmp_path / "typo"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "validation distribution measures" in printed and "test distribution measures" in printed


def test_evaluate_finds_moved_data_in_the_data_dir(tmp_path):
    # Found by the after-training audit: --data-dir did nothing for a csv: run, whose path is
    # recorded absolute, so moved data could not be evaluated.
    from emdloss.training import evaluate

    path, _ = _trained_vote_run(tmp_path, epochs=1)
    before = evaluate(tmp_path / "run")
    (tmp_path / "moved").mkdir()
    path.rename(tmp_path / "moved" / path.name)
    with pytest.raises(FileNotFoundError):
        evaluate(tmp_path / "run")
    after = evaluate(tmp_path / "run", data_dir=str(tmp_path / "moved"))
    assert after["distribution"] == before["distribution"]


# ---------------------------------------------------------------------------- predict, labelled
@pytest.fixture(scope="module")
def vote_run(tmp_path_factory):
    """A one-epoch emd2 run on the vote table: (run directory, table)."""
    from emdloss.training import TrainConfig, train

    tmp = tmp_path_factory.mktemp("vote_run")
    path = _table(tmp)
    train(
        TrainConfig(
            dataset=f"csv:{path}",
            loss="emd2",
            epochs=1,
            batch_size=16,
            output=str(tmp / "run"),
            progress=False,
            plots=False,
            ldl_baselines=False,
            data_options={"count_columns": "votes_"},
        )
    )
    return tmp / "run", path


def _hold_out(table: Path, out: Path, *, votes: bool = True, bad: str | None = None) -> Path:
    """The test rows of the vote table, without the split column (and the votes); ``bad``
    replaces the second vote of the third row."""
    with table.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    names = ["a", "b", *([f"votes_{k + 1}" for k in range(C)] if votes else [])]
    if bad is not None:
        rows[2]["votes_2"] = bad
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows([r[n] for n in names] for r in rows)
    return out


def _columns(rows: list[dict[str, str]], prefix: str) -> np.ndarray:
    return np.array([[float(r[f"{prefix}{k + 1}"]) for k in range(C)] for r in rows])


def test_predict_scores_a_labelled_vote_table(vote_run, tmp_path, capsys):
    from emdloss.cli import main
    from emdloss.training import predict

    run, table = vote_run
    labelled = _hold_out(table, tmp_path / "held_out.csv")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), str(labelled), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "distribution measures over the 15 labelled input rows" in err
    assert "metrics per prediction rule over the 15 labelled input rows" in err
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    probs = [f"prob_{k + 1}" for k in range(C)]
    targets = [f"target_prob_{k + 1}" for k in range(C)]
    preds = [f"pred_{rule}" for rule in ("argmax", "median", "expected", "bayes")]
    assert list(rows[0]) == ["id", "target_name", *probs, *targets, *preds]
    # (a) The target columns are the file's votes, normalised, named as in predictions_test.csv.
    with labelled.open() as handle:
        votes = _columns(list(csv.DictReader(handle)), "votes_")
    t = _columns(rows, "target_prob_")
    np.testing.assert_allclose(t, votes / votes.sum(1, keepdims=True), rtol=1e-5)
    with (run / "predictions_test.csv").open() as handle:
        assert set(targets) <= set(next(csv.DictReader(handle)))
    # (b) The measures against an independent computation from the written columns.
    measures = json.loads((tmp_path / "preds.measures.json").read_text())
    p = _columns(rows, "prob_")
    assert measures["labelled_rows"] == 15
    assert measures["distribution"]["kl"] == pytest.approx(
        float(np.mean(scipy.stats.entropy(t, p, axis=1))), rel=1e-4
    )
    assert measures["distribution"]["chebyshev"] == pytest.approx(
        float(np.mean(np.abs(p - t).max(axis=1))), rel=1e-4
    )
    median = [str(int(np.argmax(np.cumsum(row) >= 0.5)) + 1) for row in t]
    assert [r["target_name"] for r in rows] == median
    hits = np.mean([r["target_name"] == r["pred_argmax"] for r in rows])
    assert measures["metrics"]["argmax"]["accuracy"] == pytest.approx(hits)
    # The test rows of the training file score as training scored them, and the API agrees.
    recorded = json.loads((run / "metrics.json").read_text())["distribution"]["test"]
    for key in ("kl", "chebyshev", "emd2", "mean_mae", "mode_accuracy"):
        assert measures["distribution"][key] == pytest.approx(recorded[key], rel=1e-5)
    api_rows, api_measures = predict(run, labelled, return_measures=True)
    assert api_measures == measures  # the JSON file holds what the API returns
    assert api_rows[0][targets[0]] == pytest.approx(float(rows[0][targets[0]]), rel=1e-5)


def test_predict_on_rows_without_the_votes_is_unchanged(vote_run, tmp_path, capsys):
    from emdloss.cli import main
    from emdloss.training import predict

    run, table = vote_run
    bare = _hold_out(table, tmp_path / "bare.csv", votes=False)
    rows, measures = predict(run, bare, return_measures=True)
    assert measures is None
    assert list(rows[0]) == [
        "id",
        *[f"prob_{k + 1}" for k in range(C)],
        *[f"pred_{rule}" for rule in ("argmax", "median", "expected", "bayes")],
    ]
    assert predict(run, bare) == rows  # a list, as before
    assert main(["predict", str(run), str(bare), "--output", str(tmp_path / "p.csv")]) == 0
    assert "measures" not in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.csv", "p.csv"]
    # The same rows with their votes predict the same.
    labelled = predict(run, _hold_out(table, tmp_path / "votes.csv"))
    assert [{k: r[k] for k in rows[0]} for r in labelled] == rows


@pytest.mark.parametrize("cell", ["", "-1", "inf", "many"])
def test_a_bad_vote_in_a_labelled_input_is_the_training_error(vote_run, tmp_path, capsys, cell):
    from emdloss.cli import main
    from emdloss.data.csv_table import load_csv

    run, table = vote_run
    bad = _hold_out(table, tmp_path / "bad.csv", bad=cell)
    with pytest.raises(UserError) as training:
        load_csv(bad, count_columns="votes_")
    message = str(training.value)
    assert f"{bad}, line 4" in message and "'votes_2'" in message
    assert main(["predict", str(run), str(bad), "--output", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    if cell == "":  # the same error, with what a predict user (not the run) can change
        message = message.replace(
            "use missing='drop' to drop such rows",
            "fill it, or leave out the target columns to predict without scoring",
        )
    assert len(err.splitlines()) == 1 and err.endswith(message), err
    assert not (tmp_path / "p.csv").exists()


def test_predict_scores_a_labelled_class_column(tmp_path):
    from emdloss.training import TrainConfig, predict, train

    rng = np.random.default_rng(1)
    a = rng.normal(size=60)
    grade = (a > -0.5).astype(int) + (a > 0.5).astype(int)
    path = tmp_path / "grades.csv"
    path.write_text("a,grade\n" + "".join(f"{x:.3f},{g}\n" for x, g in zip(a, grade, strict=True)))
    run = tmp_path / "run"
    config = TrainConfig(
        dataset=f"csv:{path}", loss="emd2", epochs=1, output=str(run), progress=False
    )
    train(TrainConfig.from_dict({"target": "grade", "plots": False}, base=config))
    new = tmp_path / "new.csv"
    new.write_text("a,grade\n-1.0,0\n0.0,1.0\n1.5,2\n")  # "1.0" is class "1", as in training
    rows, measures = predict(run, new, return_measures=True)
    assert [r["target_name"] for r in rows] == ["0", "1", "2"]
    assert "distribution" not in measures and measures["labelled_rows"] == 3
    hits = np.mean([r["target_name"] == r["pred_median"] for r in rows])
    assert measures["metrics"]["median"]["accuracy"] == pytest.approx(hits)
    new.write_text("a,grade\n-1.0,0\n0.0,7\n")
    with pytest.raises(UserError, match=r"new.csv, line 3: label '7' in column 'grade' is not"):
        predict(run, new)


def test_predict_scores_an_ldl_run_from_target_prob_columns(tmp_path):
    import scipy.io

    from emdloss.training import TrainConfig, predict, train

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    labels = rng.dirichlet(np.ones(4), size=60)
    scipy.io.savemat(tmp_path / "toy.mat", {"features": x, "labels": labels})
    run = tmp_path / "run"
    train(
        TrainConfig(
            dataset=f"ldl:{tmp_path / 'toy.mat'}",
            loss="emd2",
            epochs=1,
            output=str(run),
            progress=False,
            plots=False,
            ldl_baselines=False,
        )
    )
    new = tmp_path / "new.csv"
    head = ["f0", "f1", "f2", *[f"target_prob_{k + 1}" for k in range(4)]]
    body = [[*x[i], *labels[i]] for i in range(5)]
    new.write_text("\n".join(",".join(map(str, r)) for r in [head, *body]) + "\n")
    rows, measures = predict(run, new, return_measures=True)
    np.testing.assert_allclose(
        [[r[f"target_prob_{k + 1}"] for k in range(4)] for r in rows], labels[:5], rtol=1e-12
    )
    assert measures["labelled_rows"] == 5 and measures["distribution"]["kl"] > 0
