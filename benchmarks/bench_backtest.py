"""Backtest speed: sma_crossover(10, 30) on 1,000,000 one-minute bars, in-process.

    python benchmarks/bench_backtest.py [--bars N] [--repeats K] [--out FILE.json]

The bars are a seeded geometric random walk made here, so runs compare; the figure is the
best of K runs of the whole `run_backtest` (frame to result, equity curve and trade list).
Results go to benchmarks/results/backtest.json unless --out says otherwise.
"""

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from workfleet.operations.backtest.params import BacktestParams
from workfleet.operations.backtest.run import run_backtest

SEED = 20_240_101


def random_walk_bars(bars: int, seed: int) -> pd.DataFrame:
    """One-minute OHLCV bars: log returns ~ N(0, 0.1%), each open at the previous close."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, bars)))
    open_ = np.concatenate(([100.0], close[:-1]))
    wick = np.abs(rng.normal(0.0, 0.0005, bars))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick),
            "low": np.minimum(open_, close) * (1 - wick),
            "close": close,
            "volume": rng.integers(1, 1_000, bars).astype(np.float64),
        },
        index=pd.date_range("2020-01-01", periods=bars, freq="1min", tz="UTC"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/backtest.json"))
    args = parser.parse_args()

    frame = random_walk_bars(args.bars, SEED)
    params = BacktestParams(
        symbol="SYNTH",
        timeframe="1m",
        strategy="sma_crossover",
        strategy_params={"fast": 10, "slow": 30},
    )
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        outcome = run_backtest(frame, params)
        seconds.append(time.perf_counter() - started)
    best = min(seconds)

    figures = {
        "benchmark": "backtest sma_crossover(10, 30)",
        "bars": args.bars,
        "seed": SEED,
        "repeats": args.repeats,
        "best_s": best,
        "all_s": seconds,
        "bars_per_second": args.bars / best,
        "num_trades": outcome.result["num_trades"],
        "total_return": outcome.result["total_return"],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "machine": platform.machine(),
    }
    print(f"sma_crossover(10, 30) on {args.bars:,} bars, best of {args.repeats}:")
    print(f"  wall time     {best * 1000:8.1f} ms")
    print(f"  bars/second   {args.bars / best:12,.0f}")
    print(f"  trades        {outcome.result['num_trades']:8,}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
