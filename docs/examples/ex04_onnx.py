"""
Export a trained run to ONNX and predict with onnxruntime
=========================================================

Train a small network on an ordinal CSV table (a categorical column included), export it with
its preprocessing and the median rule inside, and check that ``onnxruntime`` gives what
``emdloss predict`` gives on new rows.
"""

import csv
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from emdloss.integrations.onnx import export_onnx
from emdloss.training import TrainConfig, predict, train
from emdloss.training.rundir import read_data_record


def write_table(path, n, seed, target=True):
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x1", "x2", "colour", *(["grade"] if target else [])])
        for _ in range(n):
            x1, x2 = rng.normal(size=2)
            colour = ["red", "green", "blue"][int(rng.integers(3))]
            score = x1 + 0.5 * x2 + (0.7 if colour == "red" else 0.0) + rng.normal(0, 0.3)
            grade = "low" if score < -0.5 else ("mid" if score < 0.6 else "high")
            writer.writerow([f"{x1:.4f}", f"{x2:.4f}", colour, *([grade] if target else [])])


logging.getLogger("lightning").setLevel(logging.WARNING)  # no trainer banners in this page
tmp = Path(tempfile.mkdtemp())
write_table(tmp / "grades.csv", 300, seed=0)
config = TrainConfig(
    dataset=f"csv:{tmp / 'grades.csv'}",
    target="grade",
    classes=["low", "mid", "high"],
    loss="emd2",
    epochs=5,
    seed=0,
    accelerator="cpu",
    progress=False,
    output=str(tmp / "run"),
)
result = train(config)
print("test MAE (median rule):", round(result.test["median"]["mae"], 3))

# %%
# Export: one ``.onnx`` file and its JSON sidecar (classes, rule, input schema, opset).
model, sidecar = export_onnx(tmp / "run", tmp / "model.onnx", rule="median")
meta = json.loads(sidecar.read_text())
print({k: meta[k] for k in ("opset", "rule", "class_names")})
print([(i["name"], i["dtype"], i["shape"], i["columns"]) for i in meta["inputs"]])

# %%
# New rows, raw: numeric columns as float64, categorical columns as indices into the sidecar's
# category lists. The graph standardises, one-hot encodes, runs the network and decodes.
write_table(tmp / "new.csv", 6, seed=9, target=False)
rows = list(csv.DictReader((tmp / "new.csv").open()))
table = read_data_record(tmp / "run")["table"]
numeric = np.array([[float(r[c]) for c in table["numeric_columns"]] for r in rows])
categorical = np.array(
    [[table["categories"][c].index(r[c]) for c in table["categorical_columns"]] for r in rows]
)
session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
probs, labels = session.run(None, {"numeric": numeric, "categorical": categorical})
reference = predict(tmp / "run", [tmp / "new.csv"])
for p, label, ref in zip(probs, labels, reference, strict=True):
    ref_probs = [ref[f"prob_{n}"] for n in meta["class_names"]]
    print(
        f"onnxruntime {meta['class_names'][label]:4s} {np.round(p, 4)}   "
        f"emdloss predict {ref['pred_median']:4s} max |diff| {np.abs(p - ref_probs).max():.1e}"
    )
