"""Wall time per run of ``emdloss compare``: per-run path, grouped path and a plain PyTorch loop.

Suites (issue 20, and issue 18 for the last two):

* ``default``: what ``emdloss compare`` runs without options, 4 tables (era, esl6, lev, swd) x
  4 losses (ce, emd2, xemd1, l2) x 3 seeds = 48 runs, 20 epochs of the mlp, batch 64;
* ``holdouts``: 7 losses (ce, emd2, xemd1, xemd2, sord, corn, coral) x 30 hold-outs on LEV =
  210 runs, the suite of docs/results.md's 30-hold-out section;
* ``images`` (``--suites images``; not run by default): the cnn on RetinaMNIST (28 px, 1080
  training images, batch 64) x 4 losses (ce, emd2, xemd1, l2) x 2 seeds = 8 runs, 5 epochs
  instead of compare's 30 (``--epochs`` overrides every suite's epochs);
* ``dropout`` (``--suites dropout``; not run by default): the mlp with dropout 0.5 after each
  hidden layer on LEV x 3 losses (ce, emd2, xemd1) x 4 seeds = 12 runs (each run's own dropout
  masks in the grouped engine);
* ``ensemble`` (``--suites ensemble``; not run by default): deep ensembles of five such mlps
  (``--ensemble 5``, dropout 0.5) on LEV x 3 losses (ce, emd2, w1) x 4 seeds = 12 runs (each
  member a slot of the grouped engine's stack);
* ``movie`` (``--suites movie``; not run by default; needs ``ldl/Movie.mat`` under the data
  directory, ``$EMDLOSS_DATA``): the protocol of docs/results.md's Movie evidence on fewer
  runs, ensembles of five 256-unit mlps (dropout 0.7, weight decay 1, lr 1e-3, 15 epochs,
  features unstandardised) x 2 losses (ce, emd2) x 1 seed x 3 folds = 6 runs. The plain loop
  trains its networks on the items' modes (the time of a step is the same).

For each suite it prints, side by side, the wall time per run of

(a) the per-run path (``compare --engine per-run``: Lightning, one run at a time);
(b) the grouped path (``compare --engine grouped``, the default: runs that share a shape
    trained as one vectorised model), with the suite's total wall time;
(c) a plain PyTorch loop over the same runs: the same network, data, batch size, AdamW,
    validation (MAE) every epoch and loss, no run directory, no metrics beyond the MAE.

Times start after the imports (torch, Lightning and emdloss are imported first) and include
everything compare does (data, training, evaluation, run directories, results.csv, summary.md,
plots); baselines are left out (``--no-baselines``) since they do not depend on the engine.
The per-run path costs minutes on a suite; by default it runs on a sample of each suite's
runs (``--per-run-sample``, one run per loss and seed, round-robin) and reports the time per
run of that sample; ``--per-run-sample 0`` runs the whole suite. Run::

    python benchmarks/compare_speed.py                 # both suites (several minutes)
    python benchmarks/compare_speed.py --quick         # reduced suites, about a minute
    python benchmarks/compare_speed.py --suites "" --command 1,2   # the default command only

Last, it times the default command itself (``emdloss compare`` without options, as ``make
run`` runs it: baselines and ``--plots end`` included; issue 20's target is 15 s after the
imports) with ``--jobs 1`` and ``--jobs 2``: the wall time compare reports and this process's
CPU time (a ``--jobs`` worker's is not in it).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SUITES: dict[str, dict[str, Any]] = {
    "default": {
        "datasets": ("era", "esl6", "lev", "swd"),
        "losses": ("ce", "emd2", "xemd1", "l2"),
        "seeds": 3,
    },
    "holdouts": {
        "datasets": ("lev",),
        "losses": ("ce", "emd2", "xemd1", "xemd2", "sord", "corn", "coral"),
        "seeds": 30,
    },
    "images": {
        "datasets": ("retinamnist",),
        "losses": ("ce", "emd2", "xemd1", "l2"),
        "seeds": 2,
        "epochs": 5,
    },
    "dropout": {
        "datasets": ("lev",),
        "losses": ("ce", "emd2", "xemd1"),
        "seeds": 4,
        "options": {"model_options": {"dropout": 0.5}},
    },
    "ensemble": {
        "datasets": ("lev",),
        "losses": ("ce", "emd2", "w1"),
        "seeds": 4,
        "options": {"ensemble": 5, "model_options": {"dropout": 0.5}},
    },
    "movie": {
        "datasets": ("ldl:{data}/ldl/Movie.mat",),
        "losses": ("ce", "emd2"),
        "seeds": 1,
        "folds": 3,
        "options": {
            "ensemble": 5,
            "epochs": 15,
            "lr": 1e-3,
            "weight_decay": 1.0,
            "model_options": {"hidden_sizes": [256], "dropout": 0.7},
            "data_options": {"standardize": False},
        },
    },
}
QUICK: dict[str, dict[str, Any]] = {
    "default": {"datasets": ("lev", "swd"), "losses": ("ce", "emd2"), "seeds": 2},
    "holdouts": {"datasets": ("lev",), "losses": ("ce", "emd2", "xemd1", "l2"), "seeds": 5},
    "images": {"datasets": ("retinamnist",), "losses": ("ce", "emd2"), "seeds": 2, "epochs": 2},
    "dropout": {
        "datasets": ("lev",),
        "losses": ("ce", "emd2"),
        "seeds": 2,
        "options": {"model_options": {"dropout": 0.5}},
    },
    "ensemble": {
        "datasets": ("lev",),
        "losses": ("ce", "emd2"),
        "seeds": 2,
        "options": {"ensemble": 3, "model_options": {"dropout": 0.5}},
    },
}
QUICK["movie"] = {**SUITES["movie"], "folds": 2, "losses": ("ce",)}


def _datasets(suite: dict[str, Any]) -> list[str]:
    """The suite's data sets, ``{data}`` replaced by the data directory."""
    from emdloss.data._download import resolve_data_dir

    return [name.format(data=resolve_data_dir()) for name in suite["datasets"]]


def _compare(
    suite: dict[str, Any], output: Path, engine: str, epochs: int | None
) -> tuple[float, float]:
    from emdloss.compare import compare

    options = dict(suite.get("options", {}))
    if epochs is not None:
        options["epochs"] = epochs
    start, cpu = time.perf_counter(), time.process_time()
    result = compare(
        _datasets(suite),
        list(suite["losses"]),
        suite["seeds"],
        output,
        folds=suite.get("folds"),
        progress=False,
        baselines=False,
        train_options=options,
        engine=engine,
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    failed = result.failed
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed, e.g. {failed[0].error}")
    return seconds, cpu


def _default_command(output: Path, jobs: int) -> tuple[float, float, int]:
    """``emdloss compare`` on its built-in default as ``make run`` runs it (baselines and
    ``--plots end`` included): the wall time compare reports, this process's CPU time (the
    ``--jobs`` workers' is not in it: they are the fork server's children) and the runs."""
    from emdloss.compare import compare

    cpu = time.process_time()
    result = compare(output=output, progress=False, jobs=jobs)
    cpu = time.process_time() - cpu
    if result.failed:
        raise SystemExit(f"{len(result.failed)} run(s) failed, e.g. {result.failed[0].error}")
    return result.wall_seconds, cpu, len(result.records)


def _per_run_sample(suite: dict[str, Any], sample: int) -> list[tuple[str, str, int]]:
    runs = [
        (dataset, loss, seed)
        for seed in range(suite["seeds"])
        for dataset in _datasets(suite)
        for loss in suite["losses"]
    ]
    return runs if sample <= 0 else runs[:sample]


def _plain_loop(
    runs: Sequence[tuple[str, str, int]],
    epochs: int | None,
    options: dict[str, Any],
    folds: int | None = None,
) -> tuple[float, float]:
    """The same runs as a plain loop: data, network (with the suite's ``options``; an
    ensemble's networks side by side, the sum of their losses), AdamW, loss, validation MAE
    every epoch."""
    import torch

    from emdloss.compare import DATASET_DEFAULTS
    from emdloss.models import build_model
    from emdloss.training import TrainConfig
    from emdloss.training._build import load_data
    from emdloss.training.losses import build_loss

    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    for dataset_name, loss_name, seed in runs:
        defaults = {**DATASET_DEFAULTS.get(dataset_name, DATASET_DEFAULTS["tabular"]), **options}
        if epochs is not None:
            defaults["epochs"] = epochs
        if folds is not None:  # the first fold's split (a fold's runs are of one size)
            defaults.update(fold=0, num_folds=folds)
        config = TrainConfig(dataset=dataset_name, loss=loss_name, seed=seed, **defaults)
        torch.manual_seed(seed)
        data = load_data(config)
        x = torch.stack([data.train[i][0] for i in range(len(data.train))]).float()
        y = torch.as_tensor([int(data.train[i][1]) for i in range(len(data.train))])
        xv = torch.stack([data.val[i][0] for i in range(len(data.val))]).float()
        yv = torch.as_tensor([int(data.val[i][1]) for i in range(len(data.val))])
        if data.kind == "image" and data.mean is not None and data.std is not None:
            mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std)
            x, xv = (x - mean) / std.view(1, -1, 1, 1), (xv - mean) / std.view(1, -1, 1, 1)
        loss = build_loss(loss_name, data.num_classes, train_targets=y)
        nets = torch.nn.ModuleList(
            build_model(
                str(config.model),
                num_outputs=loss.num_outputs,
                input_shape=data.input_shape,
                **config.model_options,
            )
            for _ in range(config.ensemble)
        )
        for net in nets:
            net.head = loss.make_head(net.feature_dim) or net.head
        optimizer = torch.optim.AdamW(
            nets.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        for epoch in range(config.epochs):
            nets.train()
            order = torch.randperm(len(y))
            for begin in range(0, len(y), config.batch_size):
                index = order[begin : begin + config.batch_size]
                optimizer.zero_grad()
                sum(loss(net(x[index]), y[index]) for net in nets).backward()  # type: ignore[union-attr]
                optimizer.step()
            nets.eval()
            with torch.no_grad():
                probs = torch.stack([loss.probabilities(net(xv)) for net in nets]).mean(0)
                float((probs.argmax(1) - yv).abs().float().mean())
            del epoch
    return time.perf_counter() - start, time.process_time() - cpu


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced suites (about a minute)")
    parser.add_argument(
        "--suites",
        default="default,holdouts",
        help="comma-separated: default, holdouts, images, dropout, ensemble, movie",
    )
    parser.add_argument(
        "--per-run-sample",
        type=int,
        default=8,
        help="runs of each suite timed on the per-run path (0: the whole suite)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="override the suites' epochs (20; images 5)"
    )
    parser.add_argument(
        "--command",
        default="1,2",
        help="--jobs values for which to time the default command (emdloss compare without "
        "options: baselines and --plots end included); empty: skip",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    # Imports first: the times below are after them.
    import lightning.pytorch  # noqa: F401
    import torch  # noqa: F401

    import emdloss.compare
    import emdloss.training._build  # noqa: F401
    from emdloss.training import quiet_lightning_logs

    quiet_lightning_logs()
    suites = QUICK if args.quick else SUITES
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    header = f"{'suite':<10} {'runs':>5} {'clock':>5} {'(a) per-run':>12} {'(b) grouped':>12} "
    header += f"{'(c) plain':>10} {'a/b':>6} {'b/c':>6} {'(b) suite':>10}"
    lines = [header]
    for name in [n for n in args.suites.split(",") if n]:
        suite = suites[name]
        folds = suite.get("folds") or 1
        total = len(suite["datasets"]) * len(suite["losses"]) * suite["seeds"] * folds
        sample = _per_run_sample(suite, args.per_run_sample)
        epochs = suite.get("epochs") if args.epochs is None else args.epochs
        work = Path(tempfile.mkdtemp(prefix=f"compare_speed_{name}_"))
        try:
            grouped = _compare(suite, work / "grouped", "grouped", epochs)
            per_run_suite = {
                "datasets": sorted({d for d, _, _ in sample}),
                "losses": sorted({loss for _, loss, _ in sample}),
                "seeds": sorted({s for _, _, s in sample}),
                "folds": suite.get("folds"),
                "options": suite.get("options", {}),
            }
            per_runs = (
                len(per_run_suite["datasets"])
                * len(per_run_suite["losses"])
                * len(per_run_suite["seeds"])
                * folds
            )
            per_run = _compare(per_run_suite, work / "per_run", "per-run", epochs)
            plain = _plain_loop(sample, epochs, suite.get("options", {}), suite.get("folds"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for clock in (0, 1):  # wall, then the process's CPU time (less moved by other jobs)
            a, b = per_run[clock] / per_runs, grouped[clock] / total
            c = plain[clock] / len(sample)
            lines.append(
                f"{name:<10} {total:>5} {('wall', 'cpu')[clock]:>5} {a:>11.3f}s {b:>11.3f}s "
                f"{c:>9.3f}s {a / b:>6.1f} {b / c:>6.2f} {grouped[clock]:>9.1f}s"
            )
        print("\n".join(lines), flush=True)
        lines = lines[:1]
    print(f"load average {os.getloadavg()[0]:.1f} at the end; (a) on {args.per_run_sample or 'all'}"
          " runs per suite (seconds per run), (b) on every run")  # fmt: skip
    # The issue-20 target: the default command (48 runs, baselines, --plots end) in <= 15 s
    # after the imports, as compare reports it. CPU time moves less with other jobs than wall.
    for jobs in [int(j) for j in args.command.split(",") if j.strip()]:
        work = Path(tempfile.mkdtemp(prefix="compare_speed_command_"))
        try:
            wall, cpu, runs = _default_command(work, jobs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"default command (emdloss compare, {runs} runs, baselines, --plots end), "
              f"--jobs {jobs}: {wall:.1f} s wall as compare reports it, {cpu:.1f} s CPU in "
              f"this process (workers not counted); load average {os.getloadavg()[0]:.1f}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
