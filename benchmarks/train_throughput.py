"""Training throughput: cross-entropy versus the EMD losses on the same network, side by side.

For each model (the small CNN and a ResNet-18 with the small-input stem, on RetinaMNIST-size
inputs 3x28x28, 5 classes) and each loss (ce, emd2, w1, ground, xemd1, xemd2) this times full
training steps (forward, loss, backward, AdamW step) in interleaved rounds, so that every loss
sees the same machine load, and reports

* images per second (median over rounds);
* the loss's share of a training step, measured directly: the time of the loss's forward and
  backward on the step's outputs (for xemd1 and xemd2 including the accumulation of the features into the
  class centroids) divided by the median step time;
* the step-time difference to cross-entropy, fastest round against fastest round (noisy at the
  percent level on a shared machine: the direct measurement above is the reliable one);
* for xemd1, the once-per-epoch rebuild of the learned matrix, amortised over one RetinaMNIST
  epoch (1080 images).

Inputs are random images of the right shape: the cost of these networks and losses does not
depend on the pixel values. Run::

    python benchmarks/train_throughput.py [--rounds 7] [--steps 8] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date

import torch

from emdloss.models import build_model
from emdloss.training import TrainingLoss
from emdloss.training.losses import build_loss

LOSSES = ("ce", "emd2", "w1", "ground", "xemd1", "xemd2")
MODELS = ("cnn", "resnet18")
NUM_CLASSES = 5
SHAPE = (3, 28, 28)
EPOCH_IMAGES = 1080  # RetinaMNIST's training split


def _loss(name: str) -> TrainingLoss:
    # warmup_epochs=0: the EMD term of xemd1 and xemd2 is active from the first step (with the
    # recipe's default warm-up, a step of theirs would time cross-entropy alone).
    extra = {"warmup_epochs": 0} if name in ("xemd1", "xemd2") else {}
    loss = build_loss(name, NUM_CLASSES, **extra)  # type: ignore[arg-type]
    loss.train()
    return loss


def _timed(fn: Callable[[], None], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run(model_name: str, rounds: int, steps: int, batch_size: int) -> dict[str, dict[str, float]]:
    """Median step time, images/s and the loss's share for every loss on one model."""
    torch.manual_seed(0)
    x = torch.rand(batch_size, *SHAPE)
    y = torch.randint(0, NUM_CLASSES, (batch_size,))
    setups = {}
    for name in LOSSES:
        loss = _loss(name)
        model = build_model(model_name, num_outputs=loss.num_outputs, input_shape=SHAPE)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        setups[name] = (model, loss, optimizer)

    def step(name: str) -> None:
        model, loss, optimizer = setups[name]
        feats = model.features(x)
        out = model.head(feats)
        value = loss(out, y, None, feats if loss.needs_features else None)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    def loss_only(name: str, out: torch.Tensor, feats: torch.Tensor) -> None:
        _, loss, _ = setups[name]
        leaf = out.detach().requires_grad_(True)
        value = loss(leaf, y, None, feats if loss.needs_features else None)
        value.backward()

    for name in LOSSES:  # warm-up: allocator, kernels, lazy feature_dim of the learned matrix
        _timed(lambda n=name: step(n), 2)
    step_times: dict[str, list[float]] = {name: [] for name in LOSSES}
    loss_times: dict[str, list[float]] = {name: [] for name in LOSSES}
    for r in range(rounds):
        order = LOSSES[r % len(LOSSES) :] + LOSSES[: r % len(LOSSES)]  # rotate the order
        for name in order:
            step_times[name].append(_timed(lambda n=name: step(n), steps))
            model, _, _ = setups[name]
            with torch.no_grad():
                feats = model.features(x)
                out = model.head(feats)
            loss_times[name].append(
                _timed(lambda n=name, o=out, f=feats: loss_only(n, o, f), steps * 8)
            )

    results: dict[str, dict[str, float]] = {}
    # The fastest round is the one least disturbed by other processes on a shared machine.
    ce_best = min(step_times["ce"])
    for name in LOSSES:
        t_step = statistics.median(step_times[name])
        t_loss = statistics.median(loss_times[name])
        results[name] = {
            "step_ms": 1e3 * t_step,
            "images_per_s": batch_size / t_step,
            "loss_ms": 1e3 * t_loss,
            "loss_share_pct": 100 * t_loss / t_step,
            "vs_ce_pct": 100 * (min(step_times[name]) - ce_best) / ce_best,
        }
    # xemd1's once-per-epoch matrix rebuild, amortised over one epoch of steps.
    _, loss, _ = setups["xemd1"]
    recipe = loss.recipe

    model, _, _ = setups["xemd1"]
    with torch.no_grad():
        epoch_feats = model.features(x)

    def rebuild() -> None:
        # One epoch's statistics (here one batch: the matrix cost does not depend on N).
        recipe.ground.update(epoch_feats, y)
        recipe.ground.compute()

    t_rebuild = _timed(rebuild, 5)
    steps_per_epoch = max(1, EPOCH_IMAGES // batch_size)
    results["xemd1"]["rebuild_ms"] = 1e3 * t_rebuild
    results["xemd1"]["rebuild_share_pct"] = 100 * t_rebuild / (steps_per_epoch * t_step)
    return results


def to_markdown(all_results: dict[str, dict[str, dict[str, float]]], batch_size: int) -> str:
    """The results as a Markdown table."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        f"batch {batch_size}, inputs {SHAPE}, {NUM_CLASSES} classes, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.machine()}, load average at the end {load}",
        "",
        "| model | loss | images/s | step (ms) | loss fwd+bwd (ms) | loss share of step "
        "| fastest step vs ce |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, results in all_results.items():
        for name, r in results.items():
            lines.append(
                f"| {model} | {name} | {r['images_per_s']:.0f} | {r['step_ms']:.1f} | "
                f"{r['loss_ms']:.3f} | {r['loss_share_pct']:.2f} % | {r['vs_ce_pct']:+.1f} % |"
            )
    for model, results in all_results.items():
        x = results["xemd1"]
        lines.append(
            f"\n{model}: xemd1 matrix rebuild {x['rebuild_ms']:.2f} ms per epoch = "
            f"{x['rebuild_share_pct']:.3f} % of an epoch of steps"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=8, help="training steps per timing")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    all_results = {}
    for model in args.models.split(","):
        print(f"timing {model} ...", file=sys.stderr)
        all_results[model] = run(model, args.rounds, args.steps, args.batch_size)
    print(f"date {date.today().isoformat()}")
    print(to_markdown(all_results, args.batch_size))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(all_results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
