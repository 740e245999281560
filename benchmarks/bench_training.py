"""Training speed: seconds per epoch on 100,000 samples, on the CPU, in-process.

    python benchmarks/bench_training.py [--samples N] [--epochs K] [--batch-size B]
                                        [--hidden 32,16] [--threads T] [--out FILE.json]

The bars are seeded synthetic data (workfleet's own generator, with a planted autocorrelation);
the figure is the median epoch time, read from the loop's own per-epoch progress, over K epochs
(no early stop). Data preparation (features, split, normalisation) is timed apart.
Results go to benchmarks/results/training.json unless --out says otherwise.
"""

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from workfleet.operations.backtest.bars import bars_from_frame
from workfleet.operations.marketdata import generate
from workfleet.operations.training.features import WARMUP, samples
from workfleet.operations.training.params import TrainingParams
from workfleet.operations.training.train import train

SEED = 20_240_101


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", default="32,16")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    params = TrainingParams(
        symbol="SYNTH",
        timeframe="1h",
        epochs=args.epochs,
        patience=args.epochs,
        batch_size=args.batch_size,
        hidden_sizes=[int(size) for size in args.hidden.split(",") if size],
        device="cpu",
    )
    # every sample is one bar with features and a label: add the warm-up and the last bar
    bars = bars_from_frame(
        generate(bars=args.samples + WARMUP + 1, timeframe="1h", seed=SEED, autocorrelation=0.1)
    )
    started = time.perf_counter()
    features, _ = samples(bars)
    prepare_s = time.perf_counter() - started
    assert len(features) == args.samples

    epoch_ends: list[float] = []

    def progress(**report: Any) -> None:
        if "train_loss" in report:
            epoch_ends.append(time.perf_counter())

    began = time.perf_counter()
    outcome = train(params, bars, progress=progress, cancelled=lambda: False)
    total_s = time.perf_counter() - began
    starts = [began, *epoch_ends[:-1]]
    epochs_s = [end - start for start, end in zip(starts, epoch_ends, strict=True)]
    per_epoch = statistics.median(epochs_s[1:] or epochs_s)  # the first includes set-up

    figures = {
        "benchmark": "training epoch, CPU",
        "samples": args.samples,
        "train_samples": outcome.result["samples"]["train"],
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "hidden_sizes": params.hidden_sizes,
        "torch_threads": torch.get_num_threads(),
        "seconds_per_epoch": per_epoch,
        "epoch_s": epochs_s,
        "features_s": prepare_s,
        "total_s": total_s,
        "test_accuracy": outcome.result["test_accuracy"],
        "baseline_accuracy": outcome.result["baseline_accuracy"],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    print(
        f"training MLP {params.hidden_sizes} on {args.samples:,} samples "
        f"({outcome.result['samples']['train']:,} train), batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads:"
    )
    print(f"  seconds/epoch   {per_epoch:8.3f}  (median of epochs 2..{args.epochs})")
    print(f"  features        {prepare_s:8.3f} s")
    print(f"  whole run       {total_s:8.3f} s")
    print(
        f"  test accuracy   {outcome.result['test_accuracy']:8.3f}  "
        f"(baseline {outcome.result['baseline_accuracy']:.3f})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
