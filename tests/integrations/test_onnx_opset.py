"""``export --opset``: an opset the exporter cannot write is refused up front, and the sidecar
states the opset the file holds.

Issue 21, item 13: an unsupported ``--opset`` exited 0 after a converter traceback, wrote opset
18 and a sidecar that claimed the requested opset.

Named for emdloss.integrations.onnx (the opset check of export).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from emdloss.cli import main  # noqa: E402 - after the skips
from emdloss.errors import InputWarning  # noqa: E402
from emdloss.integrations import onnx as onnx_export  # noqa: E402


def _opset_of(model: Path) -> int:
    proto = onnx.load(str(model))
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("opset", ["7", "17", "999"])
def test_an_unsupported_opset_is_one_line_before_anything_runs(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], opset: str
) -> None:
    model = tmp_path / "m.onnx"
    assert main(["export", str(run), "--output", str(model), "--opset", opset]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"--opset {opset}: expected an ONNX opset from 18 to" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_the_sidecar_states_the_opset_written(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx_export._export

    def always_18(*args: Any) -> Any:
        # An exporter that writes another opset than asked for (as the converter did for 17).
        return real(*args[:-1], 18)

    monkeypatch.setattr(onnx_export, "_export", always_18)
    model = tmp_path / "m.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        onnx_export.export_onnx(run, model, opset=19)
    sidecar = json.loads(onnx_export.sidecar_path(model).read_text(encoding="utf-8"))
    assert _opset_of(model) == sidecar["opset"] == 18
    assert any(
        issubclass(w.category, InputWarning) and "wrote opset 18, not the 19" in str(w.message)
        for w in caught
    )
    monkeypatch.undo()
    # A supported opset other than the default is written and stated as such.
    assert main(["export", str(run), "--output", str(model), "--opset", "19", "--overwrite"]) == 0
    sidecar = json.loads(onnx_export.sidecar_path(model).read_text(encoding="utf-8"))
    assert _opset_of(model) == sidecar["opset"] == 19
