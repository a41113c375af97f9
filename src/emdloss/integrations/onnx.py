r"""Export a trained run to ONNX, preprocessing and prediction rule inside (``emdloss export``).

The ONNX graph takes the *raw* inputs that ``emdloss predict`` takes and does what it does:

- **tables**: input ``numeric`` (float64, ``(N, n_numeric)``, the numeric columns in the order of
  the sidecar's ``numeric_columns``), standardised in the graph with the training split's mean
  and scale, :math:`(x - \mu) / s`; input ``categorical`` (int64, ``(N, n_categorical)``, when
  the table has categorical columns): per column the index of the value in the sidecar's
  ``categories[column]`` list, ``-1`` for a value not seen in training (all zeros, as in
  ``predict``), one-hot encoded in the graph;
- **images**: input ``image`` (float32, ``(N, 3, H, W)``, RGB in ``[0, 1]``, resized to the
  run's side as :func:`emdloss.data.load_image` does); the graph averages the channels for a
  model trained on grey images, normalises with the training split's channel mean and standard
  deviation, and averages with the mirror image when the run used test-time augmentation.

Outputs: ``probabilities`` (float32, ``(N, C)``, columns in class order) and ``label`` (int64,
``(N,)``, the class index chosen by the prediction rule, the same arithmetic as
:func:`emdloss.decode`). A row that ``emdloss predict`` refuses (a NaN or infinite value, or a
numeric value whose standardisation overflows float32) gets ``label`` :data:`INVALID_LABEL`
(-1) and NaN probabilities, never a class; the sidecar states this. A JSON sidecar
(``<output>.json``) names the classes, the rule, the inputs and outputs and the opset the file
holds. The graph is written by the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, no
TorchScript) at opset :data:`DEFAULT_OPSET`, or any opset from :data:`MIN_OPSET` to the newest
the installed ``onnx`` knows (others are refused before anything runs: below 18 the exporter's
down-conversion fails and it silently writes 18); the batch dimension is dynamic. The output is
never written inside a run directory, nor over an existing file unless ``overwrite=True``
(``--overwrite``). Needs the ``onnx`` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from emdloss.vocabulary import RULES

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "INVALID_LABEL",
    "MIN_OPSET",
    "decode_exportable",
    "export_onnx",
    "read_sidecar",
    "sidecar_path",
]

#: ONNX opset of the exported graphs.
DEFAULT_OPSET = 18
#: Oldest opset exported: the dynamo exporter builds at 18 and cannot convert down reliably.
MIN_OPSET = 18
#: Export formats of ``emdloss export``.
FORMATS: tuple[str, ...] = ("onnx",)


def decode_exportable(
    probs: Tensor,
    rule: str,
    *,
    ground_distance: Tensor | None = None,
    positions: Tensor | None = None,
) -> Tensor:
    r""":func:`emdloss.decode` of ``(N, C)`` probabilities without its data-dependent checks.

    The same operations in the same precision (float64 where ``decode`` uses it), so that an
    exported graph decodes exactly as ``emdloss predict``: ``argmax`` (first maximum),
    ``median`` (:math:`\min\{k: P_k \ge P_{C-1}/2\}`), ``expected`` (nearest class to the mean
    position), ``bayes`` (least expected cost under ``ground_distance``, ties to the lowest
    index).

    Parameters
    ----------
    probs : Tensor
        ``(N, C)`` class probabilities (already checked by whoever made them).
    rule : {"argmax", "median", "expected", "bayes"}
        Prediction rule.
    ground_distance : Tensor, optional
        ``(C, C)`` cost matrix for ``"bayes"``.
    positions : Tensor, optional
        Class positions for ``"expected"`` (default ``0..C-1``).

    Returns
    -------
    LongTensor
        ``(N,)`` class indices.

    Examples
    --------
    >>> p = torch.tensor([[0.35, 0.0, 0.3, 0.35]])
    >>> [int(decode_exportable(p, rule)) for rule in ("argmax", "median", "expected")]
    [0, 2, 2]
    """
    c = probs.shape[-1]
    if rule == "argmax":
        best = probs.amax(dim=-1, keepdim=True)
        return (probs == best).to(torch.int32).argmax(dim=-1).to(torch.long)
    p = probs.to(torch.float64)
    if rule == "median":
        cdf = p.cumsum(dim=-1)
        half = cdf[..., -1:] / 2.0
        return (cdf < half).sum(dim=-1).clamp_max(c - 1).to(torch.long)
    if rule == "expected":
        if positions is None:
            mean = (p * torch.arange(c, dtype=torch.float64)).sum(-1) / p.sum(-1)
            return torch.round(mean).clamp(0, c - 1).to(torch.long)
        x = positions.to(torch.float64)
        mean = (p * x).sum(-1) / p.sum(-1)
        return (mean[..., None] - x).abs().argmin(dim=-1).to(torch.long)
    if rule == "bayes":
        if ground_distance is None:
            raise ValueError("rule='bayes' needs ground_distance")
        d = ground_distance.to(torch.float64)
        risk = p @ d
        best = risk.amin(dim=-1, keepdim=True)
        scale = d.abs().max().clamp_min(1.0)
        return (risk <= best + 1e-12 * scale).to(torch.int32).argmax(dim=-1).to(torch.long)
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


class _TableModel(nn.Module):
    """Raw numeric and categorical columns -> the encoding of ``predict`` -> task -> rule."""

    mean: Tensor
    scale: Tensor

    def __init__(self, task: Any, table: dict[str, Any], rule: str) -> None:
        super().__init__()
        self.task = task
        self.rule = rule
        self.register_buffer("mean", torch.tensor(table["feature_mean"], dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(table["feature_scale"], dtype=torch.float64))
        self.sizes = [len(table["categories"][name]) for name in table["categorical_columns"]]

    def encode(self, numeric: Tensor, categorical: Tensor | None) -> Tensor:
        parts = [((numeric.to(torch.float64) - self.mean) / self.scale).to(torch.float32)]
        for j, size in enumerate(self.sizes):
            assert categorical is not None
            codes = categorical[:, j : j + 1]
            parts.append((codes == torch.arange(size)[None, :]).to(torch.float32))
        return torch.cat(parts, dim=1)

    def forward(self, numeric: Tensor, categorical: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.encode(numeric, categorical)
        # predict refuses a non-finite cell and one whose standardised value overflows float32
        valid = torch.isfinite(x).all(dim=1)
        probs: Tensor = self.task.predict_proba(x)
        return _flag_invalid(probs, _decode(self.task, probs, self.rule), valid)


class _ImageModel(nn.Module):
    """RGB images in [0, 1] -> grey if the model is grey -> task (normalises, TTA) -> rule."""

    def __init__(self, task: Any, channels: int, rule: str) -> None:
        super().__init__()
        self.task = task
        self.channels = channels
        self.rule = rule

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        x = image.mean(dim=1, keepdim=True) if self.channels == 1 else image
        valid = torch.isfinite(image).flatten(1).all(dim=1)
        probs: Tensor = self.task.predict_proba(x)
        return _flag_invalid(probs, _decode(self.task, probs, self.rule), valid)


#: The ``label`` of a row that ``emdloss predict`` refuses (stated in the sidecar).
INVALID_LABEL = -1


def _flag_invalid(probs: Tensor, label: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Rows that predict refuses get label :data:`INVALID_LABEL` and NaN probabilities."""
    valid = valid & torch.isfinite(probs).all(dim=1)
    nan = torch.full_like(probs, float("nan"))
    return torch.where(valid[:, None], probs, nan), torch.where(valid, label, INVALID_LABEL)


def _decode(task: Any, probs: Tensor, rule: str) -> Tensor:
    # The same arguments as OrdinalTask.decode_all gives emdloss.decode.
    if rule == "bayes":
        return decode_exportable(probs, rule, ground_distance=task.decision_cost)
    if rule == "expected" and task.positions is not None:
        # the run keeps its positions as a list of floats (data.json): a graph constant here
        positions = torch.tensor(task.positions, dtype=torch.float64)
        return decode_exportable(probs, rule, positions=positions)
    return decode_exportable(probs, rule)


def _table_schema(table: dict[str, Any]) -> list[dict[str, Any]]:
    inputs: list[dict[str, Any]] = [
        {
            "name": "numeric",
            "dtype": "float64",
            "shape": ["batch", len(table["numeric_columns"])],
            "columns": list(table["numeric_columns"]),
            "preprocessing": "standardised in the graph: (x - feature_mean) / feature_scale",
            "feature_mean": list(table["feature_mean"]),
            "feature_scale": list(table["feature_scale"]),
        }
    ]
    if table["categorical_columns"]:
        inputs.append(
            {
                "name": "categorical",
                "dtype": "int64",
                "shape": ["batch", len(table["categorical_columns"])],
                "columns": list(table["categorical_columns"]),
                "categories": {k: list(v) for k, v in table["categories"].items()},
                "preprocessing": (
                    "index of the value in categories[column], -1 for a value not seen in "
                    "training; one-hot encoded in the graph"
                ),
            }
        )
    return inputs


def _export(
    wrapper: nn.Module,
    inputs: tuple[Tensor, ...],
    names: list[str],
    dynamic: tuple[dict[int, Any], ...],
    opset: int,
) -> Any:
    # The exporter prints its progress ("[torch.onnx] ..."); failures still raise.
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # Both inputs share the one batch dimension on purpose.
        warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")
        program = torch.onnx.export(
            wrapper,
            inputs,
            dynamo=True,
            input_names=names,
            output_names=["probabilities", "label"],
            dynamic_shapes=dynamic,
            opset_version=opset,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    return program


def export_onnx(
    run_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    rule: str | None = None,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Export the best checkpoint of a run to ONNX, with a JSON sidecar.

    Parameters
    ----------
    run_dir : path-like
        A finished run directory (``emdloss train``).
    output : path-like
        The ``.onnx`` file to write (atomically); the sidecar is ``<output>.json``.
    rule : str, optional
        Prediction rule of the ``label`` output; default the run's ``monitor_rule``.
    opset : int
        ONNX opset (default :data:`DEFAULT_OPSET`), from :data:`MIN_OPSET` to
        ``onnx.defs.onnx_opset_version()``.
    overwrite : bool
        Replace existing files at ``output`` and its sidecar (else refused).

    Returns
    -------
    (Path, Path)
        The ONNX file and the sidecar.
    """
    from emdloss._atomic import write_bytes, write_json
    from emdloss.errors import UserError
    from emdloss.training import load_task
    from emdloss.training.rundir import check_output, read_config

    try:
        import onnx
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise UserError(
            f"ONNX export needs the onnx extra ({error.name} is missing): "
            "pip install 'emdloss[onnx]'"
        ) from None
    newest = int(onnx.defs.onnx_opset_version())
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise UserError(
            f"--opset {opset}: expected an ONNX opset from {MIN_OPSET} to {newest} (the newest "
            f"the installed onnx {onnx.__version__} knows); the default is {DEFAULT_OPSET}"
        )
    config = read_config(run_dir)  # first: a folder that is no run is named as such
    # Before the slow part: nothing inside a run directory, nothing over a file unasked.
    check_output(output, overwrite=overwrite, run_dir=run_dir)
    check_output(sidecar_path(output), overwrite=overwrite, run_dir=run_dir)
    rule = config.monitor_rule if rule is None else rule
    if rule not in RULES:
        raise UserError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    task, record = load_task(run_dir)
    task = task.to("cpu").float().eval()
    n_classes = len(record["class_names"])
    batch = torch.export.Dim("batch", min=1)
    wrapper: nn.Module
    if record["kind"] == "tabular":
        table = record["table"]
        wrapper = _TableModel(task, table, rule)
        numeric = torch.zeros(2, len(table["numeric_columns"]), dtype=torch.float64)
        inputs: tuple[Tensor, ...] = (numeric,)
        names = ["numeric"]
        if table["categorical_columns"]:
            inputs += (torch.zeros(2, len(table["categorical_columns"]), dtype=torch.long),)
            names.append("categorical")
        schema = _table_schema(table)
    else:
        channels, height, width = (int(s) for s in record["input_shape"])
        wrapper = _ImageModel(task, channels, rule)
        inputs = (torch.zeros(2, 3, height, width),)
        names = ["image"]
        schema = [
            {
                "name": "image",
                "dtype": "float32",
                "shape": ["batch", 3, height, width],
                "preprocessing": (
                    "RGB in [0, 1], resized to the run's side (as emdloss.data.load_image); "
                    "the graph converts to grey when the model is grey, normalises with the "
                    "training mean and std and averages with the mirror image under TTA"
                ),
                "model_channels": channels,
                "mean": record.get("mean"),
                "std": record.get("std"),
                "tta": bool(getattr(task, "tta", False)),
            }
        ]
    wrapper.eval()
    dynamic = tuple({0: batch} for _ in inputs)
    # The exporter's passes log each rewrite at INFO: keep them out of the user's output.
    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        program = _export(wrapper, inputs, names, dynamic, opset)
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "model.onnx"
        program.save(str(staging))
        written = _written_opset(staging, opset)
        path = write_bytes(output, staging.read_bytes(), overwrite=overwrite)
    from emdloss import __version__

    sidecar = {
        "format": "onnx",
        "opset": written,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "emdloss_version": __version__,
        "run_dir": str(Path(run_dir).resolve()),
        "dataset": record.get("name"),
        "kind": record["kind"],
        "class_names": list(record["class_names"]),
        "positions": record.get("positions"),
        "rule": rule,
        "inputs": schema,
        "outputs": [
            {
                "name": "probabilities",
                "dtype": "float32",
                "shape": ["batch", n_classes],
                "columns": list(record["class_names"]),
            },
            {
                "name": "label",
                "dtype": "int64",
                "shape": ["batch"],
                "meaning": f"index into class_names chosen by the {rule!r} rule",
                "invalid_label": INVALID_LABEL,
                "invalid_rows": _INVALID_ROWS[record["kind"]],
            },
        ],
    }
    side = write_json(sidecar_path(output), sidecar, overwrite=overwrite)
    return path, side


_INVALID_ROWS = {
    "tabular": (
        f"label {INVALID_LABEL} and NaN probabilities for a row that emdloss predict refuses: a "
        "numeric value that is NaN or infinite, or so far outside the training range that its "
        "standardised value overflows float32"
    ),
    "image": (
        f"label {INVALID_LABEL} and NaN probabilities for an image holding a NaN or infinite "
        "value (or whose probabilities are not finite)"
    ),
}


def _written_opset(model: Path, requested: int) -> int:
    """The default-domain opset ``model`` holds; an InputWarning when it is not ``requested``."""
    import onnx

    from emdloss.errors import InputWarning

    proto = onnx.load(str(model), load_external_data=False)
    versions = [int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    written = versions[0] if versions else requested
    if written != requested:
        warnings.warn(
            f"the exporter wrote opset {written}, not the {requested} asked for; the sidecar "
            "states the opset written",
            InputWarning,
            stacklevel=3,
        )
    return written


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    """Where :func:`export_onnx` writes the sidecar of ``output``."""
    return Path(str(output) + ".json")


def read_sidecar(output: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of an exported model, as a dict."""
    content: dict[str, Any] = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
    return content
