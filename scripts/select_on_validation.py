"""Pick, per loss, the comparison whose runs did best on *validation* data, and report its test.

A learning-rate (or any option) sweep is several ``emdloss compare`` outputs that differ in one
option. This script reads every run's ``metrics.json`` (validation and test metrics per
prediction rule), chooses for each dataset and loss the output with the best mean validation
value of ``--metric`` (argmax rule), and prints that output's test means and standard deviations
as a Markdown table. The test split plays no part in the choice.

    python scripts/select_on_validation.py runs/results-retinamnist runs/sweep-*-lr* --metric mae
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

MAXIMISED = {"accuracy", "one_off_accuracy", "qwk", "spearman"}
SHOWN = ("accuracy", "one_off_accuracy", "mae", "rmse", "qwk", "rps", "amae")


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="+", type=Path, help="emdloss compare output dirs")
    parser.add_argument("--metric", default="mae", help="validation metric (argmax rule)")
    args = parser.parse_args(argv)
    # (dataset, loss) -> output -> list of metrics.json contents
    runs: dict[tuple[str, str], dict[Path, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for output in args.outputs:
        for path in sorted((output / "runs").glob("*/*/*/metrics.json")):
            content = json.loads(path.read_text(encoding="utf-8"))
            runs[(content["dataset"], content["loss"])][output].append(content)
    sign = -1.0 if args.metric in MAXIMISED else 1.0
    print(
        f"| dataset | loss | chosen on validation {args.metric} | runs | val {args.metric} | "
        + " | ".join(f"test {m}" for m in SHOWN)
        + " |"
    )
    print("|" + "---|" * (5 + len(SHOWN)))
    for (dataset, loss), by_output in sorted(runs.items()):

        def val_score(item: tuple[Path, list[dict]]) -> float:
            return sign * statistics.fmean(r["val"]["argmax"][args.metric] for r in item[1])

        output, chosen = min(by_output.items(), key=val_score)
        val = [r["val"]["argmax"][args.metric] for r in chosen]
        cells = [_mean_sd([r["test"]["argmax"][m] for r in chosen]) for m in SHOWN]
        print(
            f"| {dataset} | {loss} | `{output.name}` | {len(chosen)} | {_mean_sd(val)} | "
            + " | ".join(cells)
            + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
