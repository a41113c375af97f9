"""Plot helpers write valid PNGs atomically and show the numbers they are given."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
from PIL import Image

from emdloss import plots
from emdloss.ground import LearnedGroundDistance

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["none", "mild", "moderate", "severe", "proliferative"]


def assert_png(path: Path, min_side: int = 100) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()  # checks the chunks' CRCs
    with Image.open(path) as image:
        width, height = image.size
    assert width >= min_side and height >= min_side
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    return width, height


def test_ground_distance_heatmap_annotates_every_value(tmp_path: Path) -> None:
    ground = LearnedGroundDistance(5, mu=0.25, omega=2.0)
    out = tmp_path / "sub" / "ground.png"
    fig = plots.plot_ground_distance(ground.matrix, NAMES, out)
    assert_png(out)
    ax = fig.axes[0]
    texts = [float(t.get_text()) for t in ax.texts]
    np.testing.assert_allclose(texts, ground.matrix.numpy().ravel(), atol=0.005)
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert ax.images[0].get_cmap().name == "RdBu_r"  # negative entries: diverging map


def test_ground_distance_into_given_axes() -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    out = plots.plot_ground_distance(np.eye(3), ["a", "b", "c"], ax=ax2, title="eye")
    assert out is fig
    assert ax2.get_title().splitlines()[0] == "eye" and ax1.get_title() == ""


def test_ground_distance_caption_explains_a_nonzero_diagonal() -> None:
    # The learned matrix has 1 on its diagonal (the paper's convention): say so (issue 10).
    learned = plots.plot_ground_distance(np.eye(3) - 0.1, ["a", "b", "c"]).axes[0].get_title()
    assert "not a distance" in learned and "convention" not in learned
    ones = plots.plot_ground_distance(np.ones((3, 3)), ["a", "b", "c"]).axes[0].get_title()
    assert "paper's convention" in ones.splitlines()[1]
    ordinal = np.abs(np.subtract.outer(np.arange(3), np.arange(3))).astype(float)
    assert plots.plot_ground_distance(ordinal, ["a", "b", "c"]).axes[0].get_title() == (
        "Ground distance"
    )
    given = plots.plot_ground_distance(np.eye(2), ["a", "b"], caption="").axes[0].get_title()
    assert given == "Ground distance"


def test_confusion_matrix_normalisations(tmp_path: Path) -> None:
    cm = np.array([[5, 1, 0], [2, 2, 0], [0, 0, 0]])
    for normalize in ("true", "pred", "all", None):
        out = tmp_path / f"cm_{normalize}.png"
        fig = plots.plot_confusion_matrix(cm, ["a", "b", "c"], out, normalize=normalize)
        assert_png(out)
        shown = np.array([float(t.get_text()) for t in fig.axes[0].texts]).reshape(3, 3)
        if normalize is None:
            expected = cm.astype(float)
        elif normalize == "all":
            expected = cm / cm.sum()
        else:
            axis = 1 if normalize == "true" else 0
            total = cm.sum(axis=axis, keepdims=True)
            expected = np.where(total > 0, cm / np.where(total > 0, total, 1), 0.0)
        np.testing.assert_allclose(shown, expected, atol=0.005)


def test_learning_curves_group_splits(tmp_path: Path) -> None:
    history = {
        "train_loss": [1.2, 0.9, 0.7],
        "val_loss": [1.3, 1.0, 0.95],
        "val_mae": [0.9, 0.8, float("nan")],
        "qwk/val": [0.1, 0.3, 0.4],
    }
    out = tmp_path / "curves.png"
    fig = plots.plot_learning_curves(history, out)
    assert_png(out)
    titles = sorted(ax.get_title() for ax in fig.axes)
    # Titled with what they show: the split when there is one, and the direction (issue 10).
    assert titles == [
        "loss (lower is better)",
        "validation MAE (lower is better)",
        "validation QWK (higher is better)",
    ]
    loss_ax = next(ax for ax in fig.axes if ax.get_title().startswith("loss"))
    np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), history["val_loss"])
    assert loss_ax.get_legend_handles_labels()[1] == ["training", "validation"]


def test_learning_curves_mark_best_epoch_and_end_of_warmup(tmp_path: Path) -> None:
    history = {"train_loss": [1.0, 0.8, 1.6, 1.2], "val_mae": [0.9, 0.8, 0.7, 0.75]}
    fig = plots.plot_learning_curves(history, tmp_path / "c.png", best_epoch=3, warmup_epochs=2)
    for ax in fig.axes:
        marks = {line.get_label(): line.get_xdata()[0] for line in ax.lines[-2:]}
        assert marks == {"best epoch 3": 3, "end of warm-up (2 epochs)": 2.5}
        # Epochs are numbered from 1 on the x axis.
        assert list(ax.lines[0].get_xdata()) == [1, 2, 3, 4]


def test_metric_by_group_marks_the_best(tmp_path: Path) -> None:
    means = {"ce": 0.62, "emd2": 0.51, "xemd1": 0.55}
    stds = {"ce": 0.03, "emd2": 0.02}
    out = tmp_path / "mae.png"
    fig = plots.plot_metric_by_group(means, stds, "mae", out)
    assert_png(out)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["ce", "emd2 (best)", "xemd1"]
    fig = plots.plot_metric_by_group(means, stds, "accuracy")  # higher is better
    assert "ce (best)" in [t.get_text() for t in fig.axes[0].get_yticklabels()]
    widths = [p.get_width() for p in fig.axes[0].patches]
    np.testing.assert_allclose(widths, list(means.values()))


def test_per_class_mae_bars(tmp_path: Path) -> None:
    per_class = {"ce": [0.2, 0.9, 1.1, 0.8, 1.9], "emd2": [0.3, 0.6, 0.7, 0.6, 1.2]}
    out = tmp_path / "per_class.png"
    fig = plots.plot_per_class_mae(per_class, NAMES, out)
    assert_png(out)
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, per_class["ce"] + per_class["emd2"])


def test_confusion_matrices_are_row_normalised_per_panel_on_one_scale(tmp_path: Path) -> None:
    """Oracle: scikit-learn's confusion_matrix(normalize="true") of each group's predictions."""
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, 200)
    preds = {
        "ce": rng.integers(0, 5, 200),
        "emd2": np.clip(target + rng.integers(-1, 2, 200), 0, 4),
    }
    counts = {k: confusion_matrix(target, p, labels=range(5)) for k, p in preds.items()}
    out = tmp_path / "cms.png"
    fig = plots.plot_confusion_matrices(counts, NAMES, out)
    assert_png(out)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["ce", "emd2"]
    for ax, p in zip(axes, preds.values(), strict=True):
        expected = confusion_matrix(target, p, labels=range(5), normalize="true")
        shown = np.array([float(t.get_text()) for t in ax.texts]).reshape(5, 5)
        np.testing.assert_allclose(shown, expected, atol=0.005)  # written with 2 decimals
        np.testing.assert_allclose(ax.images[0].get_array(), expected)
    # One colour scale for every panel, so that equal shares look equal.
    assert len({ax.images[0].get_clim() for ax in axes}) == 1
    counted = plots.plot_confusion_matrices({"ce": counts["ce"]}, NAMES, normalize=None)
    assert counted.axes[0].texts[0].get_text() == str(counts["ce"][0, 0])
    with pytest.raises(ValueError, match="one shape"):
        plots.plot_confusion_matrices({"a": np.eye(2), "b": np.eye(3)}, ["x", "y"])
    with pytest.raises(ValueError, match="empty"):
        plots.plot_confusion_matrices({}, NAMES)


def test_runs_by_group_draws_a_line_per_run_and_marks_the_selected_epoch(tmp_path: Path) -> None:
    curves = {
        "ce": {"seed0": [0.9, 0.7, 0.8], "seed1": [0.8, 0.6, 0.65]},
        "emd2": {"seed0": [0.7, float("nan"), 0.5]},
    }
    marks = {"ce": {"seed0": 2, "seed1": 3}, "emd2": {"seed0": 3}}
    out = tmp_path / "curves.png"
    fig = plots.plot_runs_by_group(curves, out, marks=marks, ylabel="validation MAE")
    assert_png(out)
    ce, emd2 = fig.axes[:2]
    lines = [line for line in ce.get_lines() if line.get_linestyle() != "None"]
    assert [list(line.get_xdata()) for line in lines] == [[1, 2, 3], [1, 2, 3]]
    dots = [line for line in ce.get_lines() if line.get_linestyle() == "None"]
    assert [(d.get_xdata()[0], d.get_ydata()[0]) for d in dots] == [(2, 0.7), (3, 0.65)]
    assert ce.get_shared_y_axes().joined(ce, emd2)  # one y scale across losses
    assert ce.get_ylabel() == "validation MAE"


def test_figures_with_a_layout_are_written_uncropped(tmp_path: Path) -> None:
    """A laid-out figure is saved at its own size: no second text measurement for a "tight"
    bounding box (issue 20), so the PNG is exactly figsize x dpi."""
    fig = plots.plot_per_class_mae({"ce": [0.2, 0.9]}, ["0", "1"])
    out = tmp_path / "mae.png"
    plots.save_figure(fig, out)
    width, height = assert_png(out)
    expected = np.round(fig.get_size_inches() * plots._DPI).astype(int)
    assert (width, height) == tuple(expected)


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    def broken(self: Figure, *args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    fig = plots.plot_learning_curves({"loss": [1.0, 0.5]})
    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.save_figure(fig, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="square"):
        plots.plot_ground_distance(torch.zeros(2, 3), ["a", "b"])
    with pytest.raises(ValueError, match="3 entries, got 2"):
        plots.plot_ground_distance(torch.zeros(3, 3), ["a", "b"])
    with pytest.raises(ValueError, match="finite"):
        plots.plot_ground_distance([[0.0, float("nan")], [1.0, 0.0]], ["a", "b"])
    with pytest.raises(ValueError, match="'rows'"):
        plots.plot_confusion_matrix(np.eye(2), ["a", "b"], normalize="rows")
    with pytest.raises(ValueError, match="non-negative"):
        plots.plot_confusion_matrix(-np.eye(2), ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        plots.plot_learning_curves({})
    with pytest.raises(ValueError, match="empty"):
        plots.plot_metric_by_group({}, None, "mae")
    with pytest.raises(ValueError, match=r"'ce'.*5 values"):
        plots.plot_per_class_mae({"ce": [1.0]}, NAMES)


def test_import_emdloss_does_not_import_matplotlib() -> None:
    import subprocess

    code = (
        "import sys, emdloss, emdloss.ground, emdloss.decoding; print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_heatmap_text_is_readable_on_its_cell() -> None:
    # viridis is light at the top, Blues dark: the text colour follows the cell's luminance.
    values = np.array([[0.0, 1.0], [1.0, 0.0]])
    ground = plots.plot_ground_distance(values, ["a", "b"]).axes[0].texts
    assert [t.get_color() for t in ground] == ["white", "black", "black", "white"]
    confusion = plots.plot_confusion_matrix([[0, 5], [5, 0]], ["a", "b"], normalize=None)
    assert [t.get_color() for t in confusion.axes[0].texts] == ["black", "white", "white", "black"]


def test_distribution_panels_name_items_by_file_name_and_keep_both_ends() -> None:
    # Long image ids used to keep only their last 28 characters, so a folder prefix survived
    # and two ids differing at the start looked alike; now a path shows its file name, and a
    # long name loses its middle.
    ids = [
        "/data/mebeauty/images/a_very_long_face_identifier_0001_cropped.jpg",
        "images/short.png",
        "C:\\faces\\w.jpg",
    ]
    p = [[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]]
    fig = plots.plot_distributions(p, p, ["lo", "hi"], ids=ids, items=3)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1:] == ["short.png", "w.jpg"]
    assert len(titles[0]) == 28
    assert titles[0].startswith("a_very_long_") and titles[0].endswith("_cropped.jpg")
    assert "\u2026" in titles[0]
    assert plots.plot_distributions(p, p, ["lo", "hi"], items=3).axes[2].get_title() == "2"


def test_distribution_panels_show_several_models_beside_the_truth() -> None:
    from emdloss.plots import plot_distributions

    t = [[0.0, 1.0], [0.5, 0.5]]
    fig = plot_distributions(
        {"ce": [[0.2, 0.8], [0.6, 0.4]], "emd2": [[0.3, 0.7], [0.5, 0.5]]}, t, ["lo", "hi"]
    )
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert labels == ["true", "ce", "emd2"]
    heights = [round(bar.get_height(), 3) for bar in fig.axes[0].patches]
    assert heights == [0.0, 1.0, 0.2, 0.8, 0.3, 0.7]  # truth, then each model, level by level
    with pytest.raises(ValueError, match="'emd2'"):
        plot_distributions(
            {"ce": [[0.2, 0.8]], "emd2": [[0.3, 0.7, 0.0]]}, [[0.0, 1.0]], ["lo", "hi"]
        )


def test_every_measure_where_higher_is_better_is_labelled_so() -> None:
    # Found by the compare audit: learning_curves.png said "validation cosine (lower is better)".
    from emdloss.vocabulary import DISTRIBUTION_METRIC_MODES, HIGHER_IS_BETTER, METRIC_MODES

    for name, mode in {**METRIC_MODES, **DISTRIBUTION_METRIC_MODES}.items():
        assert (name in HIGHER_IS_BETTER) == (mode == "max"), name
