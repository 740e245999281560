"""How long an operation will take where: size hints and the learned runtime model.

Work is measured in each operation type's own unit (its size hint): bars for a backtest,
samples x epochs for training, seconds for a diagnostic sleep. The model learns, per operation
type and worker, the seconds one unit takes there (an exponentially weighted average of
duration / size), and keeps the work outstanding: what is queued, per type, and when each
running operation is expected to end, per worker. Nothing here reads a clock: times come in as
arguments and the caller tells the model what happened.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from workfleet.domain.operations import Operation
from workfleet.domain.workers import Worker
from workfleet.operations.timeframes import TIMEFRAMES

MIN_SIZE: Final = 1e-3  # a no-op still costs something; keeps duration / size finite


def size_hint(operation_type: str, params: Mapping[str, Any]) -> float:
    """The amount of work in an operation, in its type's unit; 1.0 when the params don't say.

    - backtesting: bars (`bars`, else the span `start`..`end` at `timeframe`) x strategies
      (`strategies` when it is a list, else 1)
    - training: samples (`samples`, else bars in `start`..`end`) x `epochs`
    - diagnostic: `seconds` for sleep and cpu, the seconds the operation lasts at speed 1
      (a worker declaring a speed runs it in seconds / speed); other actions cost MIN_SIZE
    - any other type: its `size` param
    The backend knows a dataset's bar count when the range is open: it can pass
    `{**params, "bars": n}`.
    """
    if operation_type == "backtesting":
        bars = _positive(params.get("bars")) or _bars_in_range(params)
        strategies = params.get("strategies")
        count = len(strategies) if isinstance(strategies, list) and strategies else 1
        return bars * count if bars else 1.0
    if operation_type == "training":
        samples = _positive(params.get("samples")) or _bars_in_range(params)
        epochs = _positive(params.get("epochs")) or 1.0
        return samples * epochs if samples else epochs
    if operation_type == "diagnostic":
        if params.get("action") in ("sleep", "cpu"):
            return max(_positive(params.get("seconds")) or 0.0, MIN_SIZE)
        return MIN_SIZE
    return _positive(params.get("size")) or 1.0


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def _bars_in_range(params: Mapping[str, Any]) -> float | None:
    seconds_per_bar = TIMEFRAMES.get(str(params.get("timeframe")))
    start, end = _instant(params.get("start")), _instant(params.get("end"))
    if seconds_per_bar is None or start is None or end is None:
        return None
    if (start.tzinfo is None) != (end.tzinfo is None):
        return None
    return _positive((end - start).total_seconds() / seconds_per_bar)


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def declared_capacity(worker: Worker, *, gpu_asked: bool, gpu_speedup: float) -> float:
    """Speed assumed before any measurement: cores per slot, x gpu_speedup on a GPU worker
    for an operation that asks for a GPU."""
    caps = worker.capabilities
    per_slot = caps.cores / max(caps.slots, 1)
    return per_slot * gpu_speedup if gpu_asked and caps.gpu else per_slot


@dataclass(frozen=True, slots=True)
class _Running:
    worker_id: str
    expected_end: datetime


class RuntimeModel:
    """Learned seconds per unit of work, per (operation type, worker), and the work outstanding.

    Before a worker has run a type, its estimate is the type's normalised cost (seconds per
    unit on one unit of declared capacity, learned from the workers that have run it) divided
    by the worker's declared capacity; before any worker has, one second per unit per core.

    Callers keep it current: `queued` when an operation enters the queue (again, after a lost
    attempt), `started` when it is assigned a worker, `stopped` when it leaves (any outcome),
    and `observe` with the duration of each completed attempt.
    """

    def __init__(self, *, smoothing: float = 0.3, gpu_speedup: float = 4.0) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], not {smoothing}")
        if gpu_speedup <= 0:
            raise ValueError(f"gpu_speedup must be positive, not {gpu_speedup}")
        self.smoothing = smoothing
        self.gpu_speedup = gpu_speedup
        self._rates: dict[str, dict[str, float]] = {}  # type -> worker -> seconds per unit
        self._normalised: dict[str, float] = {}  # type -> seconds per unit x declared capacity
        self._capacity: dict[tuple[str, str], float] = {}  # (type, worker) -> at its last start
        self._queued: dict[str, tuple[str, float]] = {}  # operation -> (type, size)
        self._queued_work: dict[str, tuple[int, float]] = {}  # type -> (count, total size)
        self._running: dict[str, _Running] = {}
        self._on_worker: dict[str, set[str]] = {}

    # ---- what was learned --------------------------------------------------------------------

    def observe(self, operation_type: str, worker_id: str, size: float, seconds: float) -> None:
        """A completed attempt of `size` units took `seconds` on the worker."""
        if not (size > 0 and math.isfinite(size) and seconds >= 0 and math.isfinite(seconds)):
            return
        sample = seconds / size
        rates = self._rates.setdefault(operation_type, {})
        rates[worker_id] = self._smooth(rates.get(worker_id), sample)
        capacity = self._capacity.get((operation_type, worker_id))
        if capacity is not None:
            normalised = self._normalised.get(operation_type)
            self._normalised[operation_type] = self._smooth(normalised, sample * capacity)

    def _smooth(self, old: float | None, sample: float) -> float:
        return sample if old is None else old + self.smoothing * (sample - old)

    def rates(self, operation_type: str) -> Mapping[str, float]:
        """Measured seconds per unit of this type, by worker."""
        return self._rates.get(operation_type, {})

    def normalised_cost(self, operation_type: str) -> float:
        """Seconds per unit on one unit of declared capacity (1.0 until measured)."""
        return self._normalised.get(operation_type, 1.0)

    def seconds_per_unit(self, operation_type: str, worker: Worker, *, gpu_asked: bool) -> float:
        measured = self.rates(operation_type).get(worker.worker_id)
        if measured is not None:
            return measured
        capacity = declared_capacity(worker, gpu_asked=gpu_asked, gpu_speedup=self.gpu_speedup)
        return self.normalised_cost(operation_type) / capacity

    def expected_seconds(self, op: Operation, worker: Worker) -> float:
        gpu_asked = op.requirements.gpu != "none"
        unit = self.seconds_per_unit(op.operation_type, worker, gpu_asked=gpu_asked)
        return size_hint(op.operation_type, op.params) * unit

    # ---- the work outstanding ----------------------------------------------------------------

    def queued(self, op: Operation) -> None:
        self._forget_running(op.operation_id)
        if op.operation_id in self._queued:
            return
        size = size_hint(op.operation_type, op.params)
        self._queued[op.operation_id] = (op.operation_type, size)
        count, total = self._queued_work.get(op.operation_type, (0, 0.0))
        self._queued_work[op.operation_type] = (count + 1, total + size)

    def started(self, op: Operation, worker: Worker, *, at: datetime) -> None:
        self._forget_queued(op.operation_id)
        self._forget_running(op.operation_id)
        gpu_asked = op.requirements.gpu != "none"
        self._capacity[(op.operation_type, worker.worker_id)] = declared_capacity(
            worker, gpu_asked=gpu_asked, gpu_speedup=self.gpu_speedup
        )
        end = at + timedelta(seconds=self.expected_seconds(op, worker))
        self._running[op.operation_id] = _Running(worker.worker_id, end)
        self._on_worker.setdefault(worker.worker_id, set()).add(op.operation_id)

    def stopped(self, operation_id: str) -> None:
        self._forget_queued(operation_id)
        self._forget_running(operation_id)

    def is_queued(self, operation_id: str) -> bool:
        return operation_id in self._queued

    def queued_size(self, operation_type: str) -> float:
        """Total size of the queued operations of this type."""
        return self._queued_work.get(operation_type, (0, 0.0))[1]

    def next_release(self, worker_id: str) -> datetime | None:
        """When the worker's first running operation is expected to end (None: runs nothing
        the model knows of)."""
        running = self._on_worker.get(worker_id)
        if not running:
            return None
        return min(self._running[op_id].expected_end for op_id in running)

    def _forget_queued(self, operation_id: str) -> None:
        entry = self._queued.pop(operation_id, None)
        if entry is None:
            return
        operation_type, size = entry
        count, total = self._queued_work[operation_type]
        if count == 1:  # exactly zero when empty, whatever the rounding on the way
            del self._queued_work[operation_type]
        else:
            self._queued_work[operation_type] = (count - 1, max(0.0, total - size))

    def _forget_running(self, operation_id: str) -> None:
        running = self._running.pop(operation_id, None)
        if running is None:
            return
        on_worker = self._on_worker[running.worker_id]
        on_worker.discard(operation_id)
        if not on_worker:
            del self._on_worker[running.worker_id]
