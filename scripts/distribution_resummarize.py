"""The "Distribution targets" section of a finished comparison, rendered again from its CSV.

``scripts/distribution_evidence.py`` writes ``distribution_results.csv`` (every run's, every
baseline's and the noise floor's test measures per seed and fold) and a summary rendered from
it. When the way verdicts are computed changes (2026-12-06: the corrected resampled interval
where the test rows change from run to run), this script renders the section again from the
CSV, with nothing retrained or refitted::

    python scripts/distribution_resummarize.py /tmp/ldl4/ev-movie-raw

The protocol (folds, data options) is read from the output's ``compare.json``; the data set is
loaded once, for the split sizes behind the correction.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from emdloss.compare import _distribution
from emdloss.compare._compare import run_split
from emdloss.compare._rows import DatasetInfo
from emdloss.data import load_dataset


def _rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {
            "dataset": row["dataset"],
            "loss": row["loss"],
            "seed": int(row["seed"]),
            "fold": None if row["fold"] == "" else int(row["fold"]),
        }
        parsed.update({k: float(v) for k, v in row.items() if k not in parsed and v != ""})
        out.append(parsed)
    return out


def _info(spec: str, protocol: dict[str, Any], rows: list[dict[str, Any]]) -> DatasetInfo:
    folds = protocol.get("num_folds")
    options = dict(protocol.get("data_options") or {})
    seed = min(r["seed"] for r in rows)
    if folds:
        options.update(fold=0, num_folds=folds)
    dataset = load_dataset(spec, seed=seed, **options)
    # compare.json keeps no limit_* option: the evidence runs used whole splits.
    sizes, resampled = run_split(dataset, folds)
    seeds = tuple(sorted({r["seed"] for r in rows}))
    return DatasetInfo(spec, dataset.num_classes, dataset.kind, sizes, {}, seeds, folds, (),
                       resampled=resampled)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="a directory scripts/distribution_evidence.py wrote")
    args = parser.parse_args(argv)
    out = Path(args.output)
    rows = _rows(out / _distribution.DISTRIBUTION_FILE)
    protocols = json.loads((out / "compare.json").read_text(encoding="utf-8"))["datasets"]
    infos = []
    for spec in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == spec]
        infos.append(_info(spec, protocols.get(spec, {}), mine))
    print(_distribution.distribution_section(rows, infos))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
