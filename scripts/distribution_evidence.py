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

The baselines depend on the splits alone, so they are fitted for every requested seed (and
fold) in a second process while the networks train, and kept for the seeds that finished.
``--grid``, ``--select`` and ``--set`` are compare's: with a grid every loss runs every setting
and, per loss, the setting with the best mean validation ``--select`` measure (default: the
runs' ``distribution_monitor``, KL) is reported; the baselines choose on the same measure.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from emdloss._atomic import write_text
from emdloss._yaml import load_yaml
from emdloss.compare import _distribution, compare


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
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds FIRST ... FIRST+SEEDS-1: fresh splits (or fold partitions) no run has read",
    )
    parser.add_argument("--folds", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--output", required=True)
    parser.add_argument("--deadline", default=None, help="UTC HH:MM: start no seed after it")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...")
    parser.add_argument("--select", default=None, help="validation measure of the grid")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    data_options = dict(item.split("=", 1) for item in args.data_option)
    options: dict[str, Any] = {"epochs": args.epochs, "data_options": data_options}
    for item in args.set:
        key, _, text = item.partition("=")
        options[key] = load_yaml(text, f"--set {key}") if key.endswith("_options") else text
    measure = args.select or str(options.get("distribution_monitor", "kl"))
    start = time.perf_counter()
    log: list[str] = []
    result = None
    with ProcessPoolExecutor(1) as pool:
        # The baselines need the splits only: fitted beside the networks, seed by seed with
        # folds (one fit serves every seed without them); a seed that never trains is
        # cancelled before its fit starts.
        every = list(range(args.first_seed, args.first_seed + args.seeds))
        seed_lists = [[seed] for seed in every] if args.folds else [every]
        fitting = [
            pool.submit(_baselines, args.dataset, data_options, seeds, args.folds, measure)
            for seeds in seed_lists
        ]
        for n in range(1, args.seeds + 1):
            if _past(args.deadline):
                log.append(f"deadline {args.deadline} UTC reached: stopped after {n - 1} seed(s)")
                break
            t0 = time.perf_counter()
            result = compare(
                args.dataset,
                args.losses,
                every[:n],
                args.output,
                folds=args.folds,
                jobs=args.jobs,
                train_options=options,
                progress=False,
                baselines=False,
                grid=args.grid,
                select=args.select,
                plots="none",  # per-run plots, drawn again at every seed: not evidence
            )
            log.append(f"seed {every[n - 1]}: {time.perf_counter() - t0:.0f} s")
            print(log[-1], flush=True)
        t0 = time.perf_counter()
        trained = {r.spec.seed for r in result.records if r.status != "failed"} if result else set()
        fitted: list[dict[str, Any]] = []
        fit_seconds = 0.0
        for seeds, future in zip(seed_lists, fitting, strict=True):
            if args.folds and seeds[0] not in trained:
                future.cancel()
                continue
            rows_of_seed, seconds = future.result()
            fitted += rows_of_seed
            fit_seconds += seconds
    log.append(
        f"LDL baselines: {fit_seconds:.0f} s in a second process, "
        f"{time.perf_counter() - t0:.0f} s of it after the networks"
    )
    if result is None:
        return 1
    seeds = sorted({r.spec.seed for r in result.records if r.status != "failed"})
    rows = _distribution.distribution_rows(_chosen(result))
    rows += [row for row in fitted if row["seed"] in seeds]
    if any(len(s.scores) > 1 for s in result.selections.values()):
        log += _grid_lines(result)
    # compare ran seed by seed: its data set info with every seed that finished.
    infos = [dataclasses.replace(result.infos[0], seeds=tuple(seeds))]
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


def _chosen(result: Any) -> list[Any]:
    """The runs the results report: with a grid, those of each loss's chosen setting, read
    again from their directories (compare tested the chosen ones after making its records)."""
    from emdloss.compare._records import finished_record

    out = []
    for r in result.records:
        if r.status == "failed":
            continue
        if result.selections[(r.spec.dataset, r.spec.loss)].chosen != r.spec.setting:
            continue
        out.append(finished_record(r.spec, r.run_dir, r.status) or r)
    return out


def _grid_lines(result: Any) -> list[str]:
    """Per loss, the mean validation measure of every setting and the chosen one."""
    from emdloss.compare._plan import setting_label

    lines = []
    for (_, loss), selection in result.selections.items():
        cells = ", ".join(
            f"{setting_label(s)}: {mean:.4f} ({n})" + (" *chosen*" if s == selection.chosen else "")
            for s, (mean, n) in selection.scores.items()
        )
        lines.append(f"grid, {loss}, validation {selection.metric}: {cells}")
    return lines


def _baselines(
    spec: str, data_options: dict[str, Any], seeds: list[int], folds: int | None, measure: str
) -> tuple[list[dict[str, Any]], float]:
    """The LDL baselines' test rows of every seed (and fold), their settings chosen on
    validation ``measure``, and the seconds the fits took."""
    from emdloss.data import load_dataset
    from emdloss.training import distribution_baseline_scores

    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    cache: dict[tuple[Any, ...], Any] = {}
    for seed in seeds:
        for fold in [None] if folds is None else range(folds):
            extra = {} if fold is None else {"fold": fold, "num_folds": folds}
            dataset = load_dataset(spec, seed=seed, **extra, **data_options)
            # An official split is the same for every seed: the same fit for every seed.
            key = tuple(tuple(getattr(dataset, p).ids) for p in ("train", "val", "test"))
            if key not in cache:
                cache[key] = distribution_baseline_scores(dataset, measure)["test"]
            rows += _distribution.baseline_rows(spec, seed, fold, cache[key])
    return rows, time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())
