"""`emdloss compare` is fair (issue 11): a grid chosen on validation data only, the same grid for
every loss, baselines beside the losses, paired verdicts that respect noise, soft targets
checked, timing without the start-up, train's data flags, and the Ray executor.

The harness tests inject a fake training function that writes a run directory whose metrics
depend on (loss, seed, lr) only, so that selection and verdicts can be planted.

Named for emdloss.compare._select (the choice on validation data); also covers _stats, _verdict,
_summary, _baselines, _plan's grid and _runner's Ray executor.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

# compare is part of the train extra; its oracles are SciPy and scikit-learn.
pytest.importorskip("yaml")
pytest.importorskip("lightning")
pytest.importorskip("scipy")
pytest.importorskip("sklearn")
pytest.importorskip("skordinal")

from emdloss.compare import DEFAULT_DATASETS, METRIC_KEYS, add_arguments, compare, run
from emdloss.compare._plan import parse_grid
from emdloss.compare._stats import paired_difference, welch_difference
from emdloss.errors import UserError
from emdloss.reference_results import reference_tables

# lr -> (validation MAE, test MAE): 0.1 is the best setting on test and the worst on validation.
PLANTED = {0.1: (0.9, 0.01), 0.01: (0.3, 0.5), 0.001: (0.5, 0.4)}


def planted_train(config: Any) -> SimpleNamespace:
    """A run directory whose MAE depends on lr as in PLANTED, plus a small per-seed jitter."""
    run_dir = Path(config.output)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([config.seed, sum(map(ord, config.loss))])
    val_mae, test_mae = PLANTED.get(float(config.lr), (0.6, 0.6))
    jitter = float(rng.uniform(-0.01, 0.01))

    def split(mae: float) -> dict[str, dict[str, float]]:
        values = {k: 0.5 for k in METRIC_KEYS}
        values["mae"] = mae + jitter
        return {"argmax": values, "median": dict(values)}

    metrics: dict[str, Any] = {"val": split(val_mae), "train_seconds": 0.25}
    if getattr(config, "evaluate_test", True):
        metrics["test"] = split(test_mae)
    else:  # a grid run: its test metrics appear only if planted_test is called for it
        metrics["_planted_test"] = split(test_mae)
    # history.csv: a slow first epoch (start-up), then steady ones.
    (run_dir / "history.csv").write_text(
        "epoch,epoch_seconds\n1,3.0\n2,0.5\n3,0.7\n", encoding="utf-8"
    )
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return SimpleNamespace(run_dir=run_dir, metrics=metrics, train_seconds=0.25)


def planted_test(run_dir: Path) -> None:
    """The deferred test evaluation of a planted run (compare's ``test_fn``)."""
    path = Path(run_dir) / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics["test"] = metrics.pop("_planted_test")
    path.write_text(json.dumps(metrics), encoding="utf-8")


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------- statistics
def test_paired_interval_matches_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 0.2, 20), rng.normal(1.05, 0.2, 20)
    d = paired_difference(dict(enumerate(a)), dict(enumerate(b)))
    low, high = stats.t.interval(0.95, 19, loc=np.mean(a - b), scale=stats.sem(a - b))
    assert (d.mean, d.se, d.n) == pytest.approx((np.mean(a - b), stats.sem(a - b), 20))
    assert (d.low, d.high) == pytest.approx((low, high))
    # Only the seeds both sides have are paired.
    assert paired_difference({0: 1.0, 1: 2.0, 5: 9.0}, {0: 0.0, 1: 0.5}).n == 2


def test_corrected_resampled_interval_matches_nadeau_bengio() -> None:
    # Nadeau & Bengio's corrected statistic is the plain paired t (SciPy's ttest_rel) scaled by
    # sqrt((1/n) / (1/n + n_test/n_train)), on n - 1 degrees of freedom.
    from scipy import stats

    rng = np.random.default_rng(5)
    a, b = rng.normal(0.50, 0.02, 50), rng.normal(0.49, 0.02, 50)
    ratio = 1 / 9  # 10 folds
    d = paired_difference(dict(enumerate(a)), dict(enumerate(b)), test_train_ratio=ratio)
    plain = stats.ttest_rel(a, b)
    corrected = plain.statistic * math.sqrt((1 / 50) / (1 / 50 + ratio))
    assert d.mean / d.se == pytest.approx(corrected)
    assert d.high - d.mean == pytest.approx(stats.t.ppf(0.975, 49) * d.se)
    assert d.excludes_zero() == (2 * stats.t.sf(abs(corrected), 49) < 0.05)


def test_resampled_folds_do_not_turn_a_small_gap_into_a_win() -> None:
    # Found on Movie (issue 18): over 50 (repetition, fold) pairs of 10-fold cross-validation,
    # SRCC +0.012 with a paired sd of 0.0127 "beat" the linear baseline under the plain t at
    # 5 %/12, though every repetition re-used the same 7,755 movies. Corrected, it ties.
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.0, 1.0, 50)
    diffs = 0.0123 + 0.0127 * (diffs - diffs.mean()) / diffs.std(ddof=1)
    pairs, zero = dict(enumerate(diffs)), dict.fromkeys(range(50), 0.0)
    level = 1 - 0.05 / 12
    assert paired_difference(pairs, zero, level=level).outcome("srcc") == "beats"
    fair = paired_difference(pairs, zero, level=level, test_train_ratio=1 / 9)
    assert fair.outcome("srcc") == "ties with"
    # The interval widens by sqrt(1 + n * ratio) and no number of repetitions removes that.
    plain = paired_difference(pairs, zero, level=level)
    assert fair.se / plain.se == pytest.approx(math.sqrt(1 + 50 / 9))
    with pytest.raises(ValueError, match=r"test_train_ratio must be a positive number, got -0.1"):
        paired_difference(pairs, zero, test_train_ratio=-0.1)


def test_identical_differences_are_judged_by_the_sign_test() -> None:
    # Found by the compare audit: two equal MAE differences gave a zero-width interval that
    # "excluded" 0, and compare printed "loses to ce".
    two = paired_difference({0: 0.6, 1: 0.5}, {0: 0.5, 1: 0.4})
    assert two.outcome("mae") == "cannot be judged against" and math.isnan(two.low)
    # All six of one sign: p = 2^-5 < 0.05 (exact sign test), a real verdict.
    six = paired_difference({k: 0.5 for k in range(6)}, {k: 0.25 for k in range(6)})
    assert six.outcome("mae") == "loses to" and six.outcome("accuracy") == "beats"
    # ... but not at a Bonferroni level that 2^-5 does not reach.
    assert math.isnan(
        paired_difference({k: 0.5 for k in range(6)}, {k: 0.25 for k in range(6)}, level=0.99).low
    )
    assert paired_difference({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0}).outcome("mae") == "ties with"


def test_welch_interval_matches_scipy() -> None:
    from scipy import stats

    w = welch_difference(0.40, 0.03, 30, 0.45, 0.05, 3)
    test = stats.ttest_ind_from_stats(0.40, 0.03, 30, 0.45, 0.05, 3, equal_var=False)
    half = abs(w.mean) / abs(test.statistic) * stats.t.ppf(0.975, _welch_df(0.03, 30, 0.05, 3))
    assert w.high - w.mean == pytest.approx(half)
    assert w.excludes_zero() == (test.pvalue < 0.05)


def _welch_df(s1: float, n1: int, s2: float, n2: int) -> float:
    a, b = s1**2 / n1, s2**2 / n2
    return (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))


def test_verdict_within_noise_reads_tie_and_a_clear_gap_beats() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0.7, 0.03, 30)
    noisy = base + rng.normal(0.0, 0.02, 30)  # no systematic difference
    clear = base - 0.05 + rng.normal(0.0, 0.005, 30)
    tie = paired_difference(dict(enumerate(noisy)), dict(enumerate(base)))
    assert not tie.excludes_zero() and tie.outcome("mae") == "ties with"
    win = paired_difference(dict(enumerate(clear)), dict(enumerate(base)))
    assert win.outcome("mae") == "beats" and win.outcome("accuracy") == "loses to"
    assert paired_difference({0: 1.0}, {0: 2.0}).outcome("mae") == "cannot be judged against"


def test_summary_verdict_tie_and_beats(tmp_path: Path) -> None:
    # emd2 = ce + tiny noise on every seed: a tie; xemd1 0.2 better on every seed: beats.
    def train(config: Any) -> SimpleNamespace:
        shift = {"ce": 0.0, "emd2": 0.0, "xemd1": -0.2}[config.loss]
        noise = 0.01 * math.sin(config.seed * 7 + len(config.loss))
        config = SimpleNamespace(**{**vars(config), "lr": 0.0})
        out = planted_train(config)
        metrics = out.metrics
        for part in ("val", "test"):
            for rule in metrics[part].values():
                rule["mae"] = 0.6 + 0.05 * math.cos(config.seed) + shift + noise
        (Path(config.output) / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
        return out

    # The verdict needs no baselines or figures (they cost most of this test's time: 12 runs
    # start compare's side process for them).
    kwargs: dict[str, Any] = dict(train_fn=train, progress=False, baselines=False, plots="none")
    tie = compare("lev", "ce,emd2", 6, tmp_path / "a", **kwargs)
    assert "emd2 ties with cross-entropy on MAE" in tie.summary
    win = compare("lev", "ce,xemd1", 6, tmp_path / "b", **kwargs)
    assert "xemd1 beats cross-entropy on MAE" in win.summary


def test_verdicts_on_resampled_splits_use_the_corrected_test(tmp_path: Path) -> None:
    # lev draws a hold-out per seed; with folds every run tests on its own fold. Both overlap
    # the runs' training rows, so the summary's verdicts take the corrected interval and say so.
    kwargs: dict[str, Any] = dict(train_fn=planted_train, progress=False, baselines=False)
    result = compare("lev", "ce,emd2", 2, tmp_path / "f", folds=3, plots="none", **kwargs)
    (info,) = result.infos
    train, val, test = info.sizes
    assert info.resampled and info.test_train_ratio == pytest.approx(test / (train + val))
    assert info.test_train_ratio == pytest.approx(1 / 2, abs=0.01)  # 3 folds: 1/(k - 1)
    assert "corrected resampled t-test (Nadeau & Bengio; test/train rows 0.5" in result.summary
    assert "paired t-test over seeds" not in result.summary
    # The printed verdict table says which test its intervals come from.
    assert result.table.splitlines()[-1].startswith("95% CI: corrected resampled t-test")
    # One official split: seeds change only the training, the plain paired t applies.
    path = tmp_path / "official.csv"
    parts = ["train"] * 30 + ["val"] * 10 + ["test"] * 20
    lines = ["x,y,split"] + [f"{i % 7},{i % 3},{part}" for i, part in enumerate(parts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = f"csv:{path}"
    options = {"target": "y"}
    fixed = compare(
        spec, "ce,emd2", 2, tmp_path / "o", plots="none", train_options=options, **kwargs
    )
    assert not fixed.infos[0].resampled and fixed.infos[0].test_train_ratio is None
    assert "(paired t-test over seeds)" in fixed.summary and "corrected" not in fixed.summary
    assert "95% CI:" not in fixed.table


# ------------------------------------------------------------------------------- the grid
def test_grid_chooses_on_validation_only(tmp_path: Path) -> None:
    calls: list[tuple[str, float, int]] = []

    def train(config: Any) -> SimpleNamespace:
        calls.append((config.loss, float(config.lr), config.seed))
        return planted_train(config)

    tested: list[Path] = []

    def test(run_dir: Path) -> None:
        tested.append(Path(run_dir))
        planted_test(run_dir)

    grid = ["lr=0.1,0.01,0.001"]
    result = compare(
        "lev", "ce,sord", 2, tmp_path, train_fn=train, progress=False, grid=grid, test_fn=test
    )
    # The test split is read once per chosen run and never for the other settings.
    assert len(tested) == 2 * 2 and all("lr=0.01" in str(p) for p in tested)
    for path in tmp_path.glob("runs/**/metrics.json"):
        assert ("test" in json.loads(path.read_text())) == ("lr=0.01" in str(path)), path
    # Peers get exactly the grid ours get: every loss x setting x seed.
    assert sorted(calls) == sorted(
        (loss, lr, seed) for loss in ("ce", "sord") for lr in PLANTED for seed in (0, 1)
    )
    for loss in ("ce", "sord"):
        chosen = result.selections[("lev", loss)].chosen
        assert chosen == (("lr", "0.01"),)  # best validation MAE, not lr=0.1 (best on test)
    rows = [r for r in _csv(tmp_path / "results.csv") if not r["loss"].startswith("baseline:")]
    assert {r["setting"] for r in rows} == {"lr=0.01"}
    assert {round(float(r["mae"]), 1) for r in rows} == {0.5}  # the chosen runs' test MAE
    grid_rows = _csv(tmp_path / "grid.csv")
    assert len(grid_rows) == 2 * 3 * 2
    assert {r["setting"] for r in grid_rows if r["chosen"] == "1"} == {"lr=0.01"}
    assert "test" not in grid_rows[0]  # validation scores only
    assert "Grid: every loss ran every setting" in result.summary
    assert "**0.300 (2)**" in result.summary.replace("0.29", "0.30").replace("0.31", "0.30") or (
        "(2)**" in result.summary
    )


def test_selection_never_reads_test_metrics() -> None:
    from emdloss.compare import RunRecord
    from emdloss.compare._plan import RunSpec
    from emdloss.compare._select import choose_settings, validation_scores

    def record(lr: str, val: float) -> RunRecord:
        spec = RunSpec("d", "ce", 0, setting=(("lr", lr),))
        # test metrics that would pick the other setting
        test = {"argmax": {k: 1.0 - val for k in METRIC_KEYS}}
        return RunRecord(spec, Path("x"), "done", test, val={"argmax": {"mae": val}})

    records = [record("a", 0.2), record("b", 0.8)]
    chosen = choose_settings(validation_scores(records, "mae"), "mae")[("d", "ce")].chosen
    assert chosen == (("lr", "a"),)
    chosen = choose_settings(validation_scores(records, "qwk"), "qwk")[("d", "ce")]
    assert chosen.chosen == (("lr", "a"),) and math.isnan(chosen.scores[chosen.chosen][0])


# lr -> (validation KL, test KL, validation MAE): lr=0.01 has the best validation KL, 0.1 the
# best test KL and the best validation MAE, 0.001 the best validation intersection (higher is
# better: planted as the KL, so a choice in the wrong direction picks 0.1).
PLANTED_KL = {0.1: (0.9, 0.01, 0.1), 0.01: (0.3, 0.5, 0.9), 0.001: (0.5, 0.4, 0.5)}
PLANTED_INTERSECTION = {0.1: 0.6, 0.01: 0.4, 0.001: 0.8}


def _tiny_ldl(path: Path) -> str:
    import scipy.io

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    labels = rng.dirichlet(np.ones(4), size=60)
    scipy.io.savemat(path, {"features": x, "labels": labels})
    return f"ldl:{path}"


def planted_distribution_train(config: Any) -> SimpleNamespace:
    """planted_train with the distribution measures of a run on distribution targets."""
    from emdloss.vocabulary import DISTRIBUTION_METRIC_MODES

    val_kl, test_kl, val_mae = PLANTED_KL[float(config.lr)]
    jitter = 0.001 * config.seed

    def measures(kl: float, intersection: float) -> dict[str, float]:
        out = dict.fromkeys(DISTRIBUTION_METRIC_MODES, 0.5)
        return {**out, "kl": kl + jitter, "intersection": intersection}

    out = planted_train(config)
    metrics = out.metrics
    for rule in metrics["val"].values():
        rule["mae"] = val_mae + jitter
    metrics["distribution"] = {
        "val": measures(val_kl, PLANTED_INTERSECTION[float(config.lr)]),
        "test": measures(test_kl, 0.5),
    }
    if not getattr(config, "evaluate_test", True):  # planted_test moves the test part back in
        metrics["_planted_distribution"] = metrics["distribution"].pop("test")
    (Path(config.output) / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return out


def planted_distribution_test(run_dir: Path) -> None:
    planted_test(run_dir)
    path = Path(run_dir) / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics["distribution"]["test"] = metrics.pop("_planted_distribution")
    path.write_text(json.dumps(metrics), encoding="utf-8")


@pytest.mark.parametrize(
    ("select", "chosen"),
    [(None, "0.01"), ("kl", "0.01"), ("intersection", "0.001"), ("mae", "0.1")],
)
def test_grid_on_distribution_targets_chooses_on_a_validation_measure(
    tmp_path: Path, select: str | None, chosen: str
) -> None:
    """On distribution targets the grid is chosen on the runs' distribution monitor (KL) by
    default, or on any measure in its own direction, from validation only; the test split of
    the other settings is never read."""
    spec = _tiny_ldl(tmp_path / "toy.mat")
    tested: list[Path] = []

    def test(run_dir: Path) -> None:
        tested.append(Path(run_dir))
        planted_distribution_test(run_dir)

    result = compare(
        spec,
        "ce,emd2",
        2,
        tmp_path / "cmp",
        train_fn=planted_distribution_train,
        progress=False,
        grid=["lr=0.1,0.01,0.001"],
        select=select,
        test_fn=test,
    )
    for loss in ("ce", "emd2"):
        selection = result.selections[(spec, loss)]
        assert selection.chosen == (("lr", chosen),)
        assert selection.metric == (select or "kl")
        # The mean validation value over the two seeds, per setting.
        if selection.metric == "kl":
            assert selection.scores[(("lr", "0.01"),)] == (pytest.approx(0.3005), 2)
    assert len(tested) == 2 * 2 and all(f"lr={chosen}" in str(p) for p in tested)
    for path in (tmp_path / "cmp").glob("runs/**/metrics.json"):
        content = json.loads(path.read_text())
        assert ("test" in content) == (f"lr={chosen}" in str(path)), path
        assert ("test" in content.get("distribution", {})) == (f"lr={chosen}" in str(path))
    rows = _csv(tmp_path / "cmp" / "distribution_results.csv")
    kl = {round(float(r["kl"]), 2) for r in rows if r["loss"] in ("ce", "emd2")}
    assert kl == {round(PLANTED_KL[float(chosen)][1], 2)}  # the chosen runs' test KL
    grid_rows = _csv(tmp_path / "cmp" / "grid.csv")
    assert f"val_{select or 'kl'}" in grid_rows[0] and len(grid_rows) == 2 * 3 * 2
    assert {r["setting"] for r in grid_rows if r["chosen"] == "1"} == {f"lr={chosen}"}
    if select is None:
        assert "validation KL (of the predicted distribution" in result.summary or (
            "validation kl (of the predicted distribution" in result.summary
        )


def test_a_distribution_measure_needs_distribution_targets(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--select kl: a measure of distribution targets"):
        compare("lev", "ce", 1, tmp_path, train_fn=planted_train, progress=False, select="kl")


def test_select_names_and_directions_are_stated_once() -> None:
    from emdloss.vocabulary import DISTRIBUTION_METRIC_MODES, METRICS, SELECT_MODES

    assert set(METRIC_KEYS).isdisjoint(DISTRIBUTION_METRIC_MODES)
    assert SELECT_MODES == {
        **{m: METRICS[m] for m in METRIC_KEYS},
        **DISTRIBUTION_METRIC_MODES,
    }
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--select", "cosine"]).select == "cosine"


def test_parse_grid_errors() -> None:
    assert len(parse_grid(["lr=1,2", "weight_decay=0,1e-4", "loss_options.mu=0.1,0.2"])) == 8
    with pytest.raises(ValueError, match="expected KEY=V1,V2"):
        parse_grid(["lr"])
    with pytest.raises(ValueError, match="set by compare itself"):
        parse_grid(["seed=1,2"])
    with pytest.raises(ValueError, match="unknown train option 'lrr'"):
        parse_grid(["lrr=1"], ["lr"])
    with pytest.raises(ValueError, match="given twice"):
        parse_grid(["lr=1", "lr=2"])


def test_bad_grid_value_fails_before_any_run(tmp_path: Path) -> None:
    calls: list[Any] = []
    with pytest.raises(ValueError, match="epochs"):
        compare("lev", "ce", 1, tmp_path, train_fn=calls.append, grid=["epochs=2,two"])
    assert calls == []


# ------------------------------------------------------------------------------- baselines
def test_baselines_in_results_and_summary(tmp_path: Path) -> None:
    from sklearn.dummy import DummyClassifier
    from sklearn.metrics import accuracy_score, mean_absolute_error

    from emdloss.training import TrainConfig
    from emdloss.training._build import load_data

    result = compare("swd", "ce,emd2", 2, tmp_path, train_fn=planted_train, progress=False)
    rows = _csv(tmp_path / "results.csv")
    names = {r["loss"] for r in rows if r["loss"].startswith("baseline:")}
    assert names == {"baseline:prior", "baseline:logreg", "baseline:ordinal_logit"}
    for name in names:
        assert f"| {name.replace('baseline:', 'baseline: ')}" in result.summary
    assert "**Against the baselines (swd):** the best loss" in result.summary
    # Oracle: the prior under argmax is scikit-learn's most-frequent dummy, under median the
    # median training class, on the same split as the runs.
    data = load_data(TrainConfig(dataset="swd", seed=1, model="mlp"))
    y_train, y_test = data.train.targets, data.test.targets
    dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(y_train), 1)), y_train)
    most = dummy.predict(np.zeros((len(y_test), 1)))
    median = int(np.searchsorted(np.cumsum(np.bincount(y_train)) / len(y_train), 0.5))
    prior = {r["rule"]: r for r in rows if r["loss"] == "baseline:prior" and r["seed"] == "1"}
    assert float(prior["argmax"]["accuracy"]) == pytest.approx(accuracy_score(y_test, most))
    expected = mean_absolute_error(y_test, np.full(len(y_test), median))
    assert float(prior["median"]["mae"]) == pytest.approx(expected)
    # ... and the rows are those of emdloss.metrics.trivial_baselines, metric for metric.
    from emdloss.metrics import trivial_baselines

    trivial = trivial_baselines(y_train, y_test, num_classes=data.num_classes)
    for rule, name in (("argmax", "most_common"), ("median", "median")):
        for key in METRIC_KEYS:
            assert float(prior[rule][key]) == pytest.approx(trivial[name][key], abs=1e-6), key


def test_logreg_baseline_matches_scikit_learn() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import mean_absolute_error

    from emdloss.compare._baselines import LOGREG_C, baseline_metrics
    from emdloss.training import TrainConfig
    from emdloss.training._build import load_data

    data = load_data(TrainConfig(dataset="lev", seed=0, model="mlp"))
    x = {p: torch.stack([s.input(i) for i in range(len(s))]).double().numpy()
         for p, s in (("train", data.train), ("val", data.val), ("test", data.test))}  # fmt: skip
    best = min(
        (LogisticRegression(C=c, max_iter=5000).fit(x["train"], data.train.targets)
         for c in LOGREG_C),
        key=lambda m: mean_absolute_error(data.val.targets, m.predict(x["val"])),
    )  # fmt: skip
    metrics, errors = baseline_metrics(data, "mae")
    assert errors == {}
    expected = mean_absolute_error(data.test.targets, best.predict(x["test"]))
    assert metrics["baseline:logreg"]["argmax"]["mae"] == pytest.approx(expected)


def test_ordinal_logit_fit_equals_the_plain_statsmodels_fit() -> None:
    """The fast logistic CDF (issue 20) and the analytic gradient change the time of the fit,
    not the model: the CDF is statsmodels' bit for bit, the gradient its finite differences',
    and the fit reaches the plain ``OrderedModel(distr="logit")``'s probabilities on a real
    table."""
    from statsmodels.miscmodels.ordinal_model import OrderedModel
    from statsmodels.tools.numdiff import approx_fprime

    from emdloss.compare._baselines import _logit_model
    from emdloss.training import TrainConfig
    from emdloss.training._build import load_data

    data = load_data(TrainConfig(dataset="swd", seed=2, model="mlp"))
    x = torch.stack([data.train.input(i) for i in range(len(data.train))]).double().numpy()
    x = x[:, x.std(axis=0) > 1e-12]
    codes = np.searchsorted(np.unique(data.train.targets), data.train.targets)
    plain, fast = (model(codes, x, distr="logit") for model in (OrderedModel, _logit_model()))
    edges = np.array([-np.inf, -3.0, 0.0, -0.0, 2.5, np.inf, np.nan])
    np.testing.assert_array_equal(plain.cdf(edges), fast.cdf(edges))
    rng = np.random.default_rng(0)
    for params in (
        plain.start_params,
        plain.start_params + rng.normal(0, 0.3, plain.start_params.size),
    ):
        numeric = approx_fprime(params, plain.loglike, centered=True)
        np.testing.assert_allclose(fast.score(params), numeric, rtol=1e-5, atol=1e-4)
    fits = [
        plain.fit(method="bfgs", maxiter=2000, disp=False),
        fast.fit(method="bfgs", maxiter=2000, disp=False, skip_hessian=True),
    ]
    assert fits[1].llf == pytest.approx(fits[0].llf, rel=1e-7)
    probs = [np.asarray(f.model.predict(f.params, exog=x)) for f in fits]
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-4)


def test_reused_metric_objects_score_baselines_as_fresh_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The baselines' metric objects are built once and reset (issue 20): the same numbers,
    to the bit, as an object built for every score, on two splits in a row."""
    from emdloss.compare import _baselines
    from emdloss.training import TrainConfig
    from emdloss.training._build import load_data

    splits = [load_data(TrainConfig(dataset="swd", seed=s, model="mlp")) for s in (0, 1)]
    reused = [_baselines.baseline_metrics(data, "mae") for data in splits]
    fresh = _baselines._metric.__wrapped__
    monkeypatch.setattr(_baselines, "_metric", lambda n, p: fresh(n, p))
    assert [_baselines.baseline_metrics(data, "mae") for data in splits] == reused


# ------------------------------------------------------------------------------- soft targets
def _soft(monkeypatch: pytest.MonkeyPatch) -> None:
    from emdloss.compare import _compare as compare_module

    real = compare_module._load_info

    def load(*args: Any, **kwargs: Any) -> Any:
        dataset, options = real(*args, **kwargs)
        dataset.train.dists = torch.full((len(dataset.train), dataset.num_classes), 0.25)
        return dataset, options

    monkeypatch.setattr(compare_module, "_load_info", load)


def test_soft_targets_with_a_hard_label_peer_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _soft(monkeypatch)
    calls: list[Any] = []
    with pytest.raises(ValueError, match="sord can only use class labels"):
        compare("swd", "emd2,sord", 1, tmp_path, train_fn=calls.append, progress=False)
    assert calls == []


def test_hard_for_all_trains_every_loss_on_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _soft(monkeypatch)
    configs: list[Any] = []

    def train(config: Any) -> SimpleNamespace:
        configs.append(config)
        return planted_train(config)

    result = compare("swd", "emd2,sord", 1, tmp_path, train_fn=train, progress=False,
                     soft_targets="hard-for-all", baselines=False)  # fmt: skip
    assert {c.soft_targets for c in configs} == {False}
    assert "hard class labels for every loss (--soft-targets hard-for-all)" in result.summary


def test_soft_targets_false_drops_the_distributions(monkeypatch: pytest.MonkeyPatch) -> None:
    import emdloss.data as data_module
    from emdloss.training import TrainConfig
    from emdloss.training._build import load_data

    real = data_module.load_dataset

    def soft(*args: Any, **kwargs: Any) -> Any:
        dataset = real(*args, **kwargs)
        for part in (dataset.train, dataset.val, dataset.test):
            part.dists = torch.full((len(part), dataset.num_classes), 0.25)
        return dataset

    monkeypatch.setattr(data_module, "load_dataset", soft)
    assert load_data(TrainConfig(dataset="swd")).soft
    hard = load_data(TrainConfig(dataset="swd", soft_targets=False))
    assert not hard.soft and len(hard.train[0]) == 2


# ------------------------------------------------------------------------------- timing, flags
def test_timing_reports_the_first_epoch_apart(tmp_path: Path) -> None:
    compare("lev", "ce", 1, tmp_path, train_fn=planted_train, progress=False, baselines=False)
    row = next(r for r in _csv(tmp_path / "results.csv") if r["rule"] == "argmax")
    assert float(row["first_epoch_seconds"]) == 3.0
    assert float(row["epoch_seconds"]) == pytest.approx(0.6)  # mean of the later epochs


def test_compare_takes_trains_data_flags() -> None:
    from emdloss._cli_parser import build_parser
    from emdloss.compare._cli import _options_from_args

    argv = ["compare", "--target", "grade", "--classes", "a,b,c", "--data-option", "bins=5"]
    args = build_parser().parse_args([*argv, "--data-option", "limit=9", "--grid", "lr=1,2"])
    options = _options_from_args(args)
    assert options["target"] == "grade" and options["classes"] == "a,b,c"
    assert options["data_options"] == {"bins": 5, "limit": 9}
    assert args.grid == ["lr=1,2"]
    assert "esl6" in DEFAULT_DATASETS and "esl" not in DEFAULT_DATASETS


def test_published_rows_show_their_runs_and_spread() -> None:
    tables = {t.source: t for t in reference_tables("retinamnist")}
    plus = tables["MedMNIST+"]
    assert plus.repetitions == 3
    assert [(r.metrics["accuracy"], r.spread["accuracy"]) for r in plus.rows] == [
        (0.5417, 0.0077),
        (0.5425, 0.0108),
    ]
    assert "pretrained" in plus.protocol.lower()


# ------------------------------------------------------------------------------- Ray
@pytest.mark.slow
def test_ray_executor_matches_local_and_resumes(tmp_path: Path, ray_session: None) -> None:
    # ray_session (conftest): one local cluster for the Ray tests, joined by compare.
    kwargs: dict[str, Any] = dict(
        train_fn=planted_train, test_fn=planted_test, progress=False, grid=["lr=0.1,0.01"]
    )
    local = compare("lev", "ce,emd2", 2, tmp_path / "local", **kwargs)
    remote = compare("lev", "ce,emd2", 2, tmp_path / "ray", executor="ray", **kwargs)
    assert [r.status for r in remote.records] == ["done"] * 8
    for name in ("results.csv", "grid.csv"):
        a = (tmp_path / "local" / name).read_text(encoding="utf-8")
        assert a == (tmp_path / "ray" / name).read_text(encoding="utf-8"), name
    assert local.summary.replace("local", "ray") == remote.summary
    # Resume: remove one finished run; only it is trained again, by Ray.
    victim = tmp_path / "ray" / "runs" / "lev" / "emd2" / "lr=0.01" / "seed1" / "metrics.json"
    victim.unlink()
    again = compare("lev", "ce,emd2", 2, tmp_path / "ray", executor="ray", **kwargs)
    assert sorted(r.status for r in again.records) == ["done"] + ["skipped"] * 7
    assert (tmp_path / "ray" / "results.csv").read_text(encoding="utf-8") == (
        tmp_path / "local" / "results.csv"
    ).read_text(encoding="utf-8")


def test_cli_run_passes_the_new_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from emdloss.compare import _compare as compare_module

    seen: dict[str, Any] = {}

    def fake(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return SimpleNamespace(
            summary="", table="", records=[], files=[], wall_seconds=0.0, failed=[]
        )

    monkeypatch.setattr(compare_module, "compare", fake)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["--output", str(tmp_path)])) == 0
    assert seen["plots"] == "end"  # each run's plots drawn once, when the runs are done
    argv = ["--grid", "lr=1,2", "--select", "qwk", "--soft-targets", "hard-for-all",
            "--executor", "ray", "--ray-address", "auto", "--no-baselines", "--plots", "none"]  # fmt: skip
    assert run(parser.parse_args([*argv, "--output", str(tmp_path)])) == 0
    assert seen["plots"] == "none"
    assert seen["grid"] == ["lr=1,2"] and seen["select"] == "qwk"
    assert seen["soft_targets"] == "hard-for-all" and seen["baselines"] is False
    assert (seen["executor"], seen["ray_address"]) == ("ray", "auto")


@pytest.mark.parametrize(
    ("accuracy", "word"), [(0.60, "is better than"), (0.545, "within the noise")]
)
def test_better_than_published_only_beyond_both_noises(accuracy: float, word: str) -> None:
    from emdloss.compare import RunRecord
    from emdloss.compare._plan import RunSpec
    from emdloss.compare._rows import DatasetInfo
    from emdloss.compare._summary import render_summary

    records = []
    for seed in range(10):
        values = {k: 0.5 for k in METRIC_KEYS}
        values["accuracy"] = accuracy + 0.01 * (seed % 3 - 1)  # sd 0.009
        spec = RunSpec("retinamnist", "ce", seed)
        records.append(RunRecord(spec, Path("o") / spec.relative_dir, "done", {"argmax": values}))
    info = DatasetInfo("retinamnist", 5, "image", (1080, 120, 400), {"model": "cnn"}, tuple(range(10)),
                       None, ("ce",))  # fmt: skip
    summary = render_summary(records, [info], output="o")
    line = next(
        x for x in summary.splitlines() if "(ViT-B/16 linear probe, 0.542 ± 0.011, 3 runs)" in x
    )
    assert word in line and "10 runs" in line
    # MedMNIST v2 publishes no spread: nothing is claimed against it.
    assert "not judged: the source publishes no spread" in summary


def test_the_best_of_several_variants_is_tested_with_bonferroni() -> None:
    """A gap that a single 95 % test calls a win (p about 0.03) is a tie once it is the best of
    five variants picked by their means: then it is tested at 5 % / 5."""
    from emdloss.compare._rows import VERDICT_METRICS
    from emdloss.compare._verdict import _verdict

    n = 20
    pattern = np.resize([1.0, -1.0], n) * np.linspace(0.5, 1.5, n)  # mean 0, sd about 0.9
    pattern = pattern / pattern.std(ddof=1)
    base = 0.7 + 0.05 * np.cos(np.arange(n))

    def rows(shifts: dict[str, float]) -> list[dict[str, Any]]:
        out = []
        for loss, shift in shifts.items():
            noise = 0.0 if loss == "ce" else 0.01 * np.roll(pattern, len(loss))
            for seed in range(n):
                value = float(base[seed] + shift + (noise[seed] if loss != "ce" else 0.0))
                row = {"dataset": "lev", "loss": loss, "rule": "argmax", "seed": seed, "fold": None}
                out.append(row | {metric: value for metric in VERDICT_METRICS})
        return out

    # mean paired difference -0.0055, se 0.01/sqrt(20): t = 2.46, between t(0.975, 19) = 2.09
    # and t(1 - 0.025/5, 19) = 3.17.
    alone = _verdict("lev", ["ce", "emd2"], rows({"ce": 0.0, "emd2": -0.0055}))
    assert "emd2 beats cross-entropy on MAE" in alone and "Bonferroni" not in alone
    five = {"ce": 0.0, "emd2": -0.0055, "xemd1": 0.0, "xemd2": 0.0, "w1": 0.0, "ground": 0.0}
    picked = _verdict("lev", list(five), rows(five))
    assert "emd2 ties with cross-entropy on MAE" in picked
    assert "best of 5 EMD variants is tested at 5%/5" in picked and "99% CI" in picked


def test_paired_plot_shows_bonferroni_intervals_against_ce(tmp_path: Path) -> None:
    """plots/<dataset>/paired_vs_ce.png: each loss minus ce, paired by seed, with intervals
    corrected for the number of losses (the highest-mean bar of metrics.png is not a verdict)."""
    from emdloss.compare._plots import paired_to_reference, plot_paired
    from emdloss.compare._stats import selection_level

    rng = np.random.default_rng(1)
    base = rng.normal(0.7, 0.05, 12)
    shifts = {"ce": 0.0, "emd2": -0.05, "sord": 0.0, "corn": 0.01}
    rows = [
        {"dataset": "lev", "loss": loss, "rule": "argmax", "seed": s, "fold": None}
        | {"mae": float(base[s] + shift + rng.normal(0, 0.01)), "qwk": 0.5}
        for loss, shift in shifts.items()
        for s in range(12)
    ]
    intervals = paired_to_reference(rows, "lev", list(shifts), ("mae", "qwk"), rules=("argmax",))
    assert {loss for loss, _, _ in intervals} == {"emd2", "sord", "corn"}
    d = intervals[("emd2", "argmax", "mae")]
    mine = {r["seed"]: r["mae"] for r in rows if r["loss"] == "emd2"}
    ref = {r["seed"]: r["mae"] for r in rows if r["loss"] == "ce"}
    assert d == paired_difference(mine, ref, level=selection_level(3))
    assert d.outcome("mae") == "beats" and d.level == pytest.approx(1 - 0.05 / 3)
    path = plot_paired(tmp_path / "paired.png", "lev", intervals)
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_paired(tmp_path / "none.png", "lev", {}) is None
