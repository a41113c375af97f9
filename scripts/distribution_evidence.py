"""Distribution-target evidence that stays paired when it is stopped early.

``emdloss compare`` trains loss by loss; stopped half way, its finished runs are not paired. This
script grows the comparison one seed at a time (``compare`` skips finished runs), so every
finished seed has every loss, and stops starting seeds at ``--deadline`` (UTC, HH:MM). Then it
fits the LDL baselines (:mod:`emdloss.ldl_baselines`) on each finished seed's splits (once when
the data have an official split, which no seed changes) and writes ``distribution_summary.md``
(the "Distribution targets" section of ``compare``'s summary, on the finished seeds) and
``distribution_results.csv`` into the output, with the wall times::

    nice -n 10 python scripts/distribution_evidence.py \\
        --dataset csv:../shared/data/mebeauty/facenet512.csv \\
        --data-option count_columns=votes_ --data-option ignore=image \\
        --losses ce,emd2,w1,nima,xemd1 --seeds 20 --epochs 10 --jobs 2 \\
        --output runs/evidence-mebeauty --deadline 01:15
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from emdloss._atomic import write_text
from emdloss.compare import _distribution, compare
from emdloss.compare._rows import DatasetInfo


def _past(deadline: str | None) -> bool:
    if not deadline:
        return False
    hour, minute = (int(v) for v in deadline.split(":"))
    now = dt.datetime.now(dt.timezone.utc)
    return (now.hour, now.minute) >= (hour, minute)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--losses", default="ce,emd2,w1,nima,xemd1")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--folds", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--output", required=True)
    parser.add_argument("--deadline", default=None, help="UTC HH:MM: start no seed after it")
    args = parser.parse_args(argv)
    data_options = dict(item.split("=", 1) for item in args.data_option)
    options: dict[str, Any] = {"epochs": args.epochs, "data_options": data_options}
    start = time.perf_counter()
    log: list[str] = []
    result = None
    for n in range(1, args.seeds + 1):
        if _past(args.deadline):
            log.append(f"deadline {args.deadline} UTC reached: stopped after {n - 1} seed(s)")
            break
        t0 = time.perf_counter()
        result = compare(
            args.dataset,
            args.losses,
            list(range(n)),
            args.output,
            folds=args.folds,
            jobs=args.jobs,
            train_options=options,
            progress=False,
            baselines=False,
        )
        log.append(f"seed {n - 1}: {time.perf_counter() - t0:.0f} s")
        print(log[-1], flush=True)
    if result is None:
        return 1
    seeds = sorted({r.spec.seed for r in result.records if r.status != "failed"})
    rows = _distribution.distribution_rows(result.records)
    t0 = time.perf_counter()
    rows += _baselines(args.dataset, data_options, seeds, args.folds)
    log.append(f"LDL baselines: {time.perf_counter() - t0:.0f} s")
    infos = [DatasetInfo(args.dataset, 0, "tabular", (0, 0, 0), {}, tuple(seeds), args.folds, ())]
    section = _distribution.distribution_section(rows, infos)
    wall = time.perf_counter() - start
    out = Path(args.output)
    write_text(out / _distribution.DISTRIBUTION_FILE, _distribution.distribution_csv(rows))
    write_text(
        out / "distribution_summary.md",
        section + "\n" + "\n".join(f"- {line}" for line in log) + f"\n- wall {wall:.0f} s\n",
    )
    print(section)
    print(json.dumps({"seeds": seeds, "wall_seconds": round(wall)}))
    return 0


def _baselines(
    spec: str, data_options: dict[str, Any], seeds: list[int], folds: int | None
) -> list[dict[str, Any]]:
    from emdloss.data import load_dataset
    from emdloss.training import distribution_baseline_scores

    rows: list[dict[str, Any]] = []
    cache: dict[tuple[Any, ...], Any] = {}
    for seed in seeds:
        for fold in [None] if folds is None else range(folds):
            extra = {} if fold is None else {"fold": fold, "num_folds": folds}
            dataset = load_dataset(spec, seed=seed, **extra, **data_options)
            # An official split is the same for every seed: the same fit for every seed.
            key = tuple(tuple(getattr(dataset, p).ids) for p in ("train", "val", "test"))
            if key not in cache:
                cache[key] = distribution_baseline_scores(dataset)["test"]
            rows += _distribution.baseline_rows(spec, seed, fold, cache[key])
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
