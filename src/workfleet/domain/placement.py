"""Placement: pure functions `(operation, workers, now) -> worker | None` behind a policy name.

- `round_robin`: the least recently dispatched capable worker with a free slot.
- `capacity`: the brief's score, cores x memory x (1 - load), computed on what is free now, so a
  partly busy big worker ranks below an idle one that has more left; least recently used among
  equals. (Scoring only idle workers on their size, as the brief's project did, always picks
  the biggest idle worker.)
- `fastest`: where the operation is expected to finish first, from the `RuntimeModel`'s learned
  speeds; near the end of the queue it may leave the operation waiting for a busy worker that
  would finish it much sooner (see `fastest`).
All of them prefer GPU workers for `gpu: preferred` and fall back to the others; `fastest`
does so until it has measured a GPU worker on the operation type, then goes by its estimates.

`POLICIES` holds the stateless ones; `make_policy(name, model)` builds any of `POLICY_NAMES`.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from workfleet.domain.labels import selects
from workfleet.domain.operations import Operation, Requirements
from workfleet.domain.runtime import RuntimeModel, declared_capacity, size_hint
from workfleet.domain.workers import Worker

PlacementPolicy = Callable[[Operation, Iterable[Worker], datetime], Worker | None]

# `fastest` waits only for an end at least 20% sooner: its estimates treat the queue as fluid,
# but operations come whole, and the last ones to start decide the makespan (tried with
# `workfleet simulate` on the shipped scenarios and seeds: 0.8 did better than 1.0 or 0.6).
WAIT_MARGIN: Final = 0.8


def can_ever_run(op: Operation, worker: Worker) -> bool:
    """The worker could run `op` if it were idle: type and hard requirements match."""
    req = op.requirements
    caps = worker.capabilities
    return (
        op.operation_type in worker.operation_types
        and (req.worker_type is None or req.worker_type == worker.worker_type)
        and (req.gpu != "required" or caps.gpu)
        and caps.memory_gb >= req.min_memory_gb
        and caps.cores >= req.min_cores
        and (not req.labels or selects(req.labels, caps.labels))
    )


def unmet_requirements(req: Requirements, worker: Worker) -> list[str]:
    """The hard requirements the worker does not meet, named as the submitter wrote them
    (empty: it meets them all; `can_ever_run` is the fast form, the type included)."""
    caps = worker.capabilities
    unmet = []
    if req.worker_type is not None and req.worker_type != worker.worker_type:
        unmet.append(f"worker_type {req.worker_type!r}")
    if req.gpu == "required" and not caps.gpu:
        unmet.append("gpu required")
    if caps.memory_gb < req.min_memory_gb:
        unmet.append(f"min_memory_gb {req.min_memory_gb:g}")
    if caps.cores < req.min_cores:
        unmet.append(f"min_cores {req.min_cores}")
    unmet += [
        f"label {key}={value}" for key, value in req.labels if (key, value) not in caps.labels
    ]
    return unmet


def can_run_now(op: Operation, worker: Worker) -> bool:
    """Available (not unavailable, not draining) with a free slot, and capable."""
    return (
        worker.unavailable_since is None
        and not worker.draining
        and len(worker.reserved) < worker.capabilities.slots
        and can_ever_run(op, worker)
    )


def round_robin(op: Operation, workers: Iterable[Worker], now: datetime) -> Worker | None:
    """Least recently dispatched capable worker with a free slot; GPU first when preferred."""
    prefer_gpu = op.requirements.gpu == "preferred"
    best: Worker | None = None
    best_key: tuple[bool, int, str] | None = None
    for worker in workers:
        if not can_run_now(op, worker):
            continue
        # A dispatch sequence, not a clock: two placements in the same clock tick still rotate.
        key = (prefer_gpu and not worker.capabilities.gpu, *_least_recently_used(worker))
        if best_key is None or key < best_key:
            best, best_key = worker, key
    return best


def _least_recently_used(worker: Worker) -> tuple[int, str]:
    return (worker.last_dispatch_seq, worker.worker_id)


def capacity(op: Operation, workers: Iterable[Worker], now: datetime) -> Worker | None:
    """Most free capacity among capable workers with a free slot; GPU first when preferred;
    least recently used among equals."""
    prefer_gpu = op.requirements.gpu == "preferred"
    best: Worker | None = None
    best_key: tuple[bool, float, int, str] | None = None
    for worker in workers:
        if not can_run_now(op, worker):
            continue
        key = (
            prefer_gpu and not worker.capabilities.gpu,
            -free_capacity(worker),
            *_least_recently_used(worker),
        )
        if best_key is None or key < best_key:
            best, best_key = worker, key
    return best


def free_capacity(worker: Worker) -> float:
    """The brief's score (cores x memory_gb x (1 - load)) on what is free now.

    The load is the share of slots the backend has reserved (authoritative), or what the worker
    last reported when that is higher (CPU for the cores, memory for the memory).
    """
    caps = worker.capabilities
    load = worker.load
    busy = len(worker.reserved) / caps.slots if caps.slots > 0 else 1.0
    # conditionals rather than max(): this runs once per worker per placement
    cpu_busy = busy if busy > load.current_load else load.current_load
    cpu_busy = cpu_busy if cpu_busy > load.cpu_usage_ratio else load.cpu_usage_ratio
    memory_busy = busy if busy > load.memory_usage_ratio else load.memory_usage_ratio
    if cpu_busy >= 1.0 or memory_busy >= 1.0:
        return 0.0
    return caps.cores * (1.0 - cpu_busy) * caps.memory_gb * (1.0 - memory_busy)


def fastest(
    op: Operation, workers: Iterable[Worker], now: datetime, *, model: RuntimeModel
) -> Worker | None:
    """Where `op` is expected to finish first, now or after waiting for a busy worker.

    The expected duration on a worker is the op's size hint x the model's seconds per unit
    there. Without waiting, the op goes to the free worker where it ends first. Waiting is
    weighed only when the model tracks the queue (the op was `queued`), by comparing when the
    op and the work of its type queued behind it would be done:
    - start now: max(duration on the best free worker, work behind / the fleet's rate);
    - wait: the faster busy workers take it and, in the worst case, everything behind it too:
      max(their soonest end for it, their first release + (op + work behind) / their rate).
    It waits (returns None) when waiting ends sooner by WAIT_MARGIN. So a long queue never
    waits (every slot is worth using), and near its end an operation waits for a GPU or a
    much faster worker.
    """
    size = size_hint(op.operation_type, op.params)
    survey = _survey(op, workers, model, size)
    best = survey.best_free()
    if best is None:
        return None
    if not model.is_queued(op.operation_id):
        return best[-1]
    best_seconds = best[0]
    queued = max(model.queued_size(op.operation_type), size)  # the op included
    start_now_end = max(best_seconds, (queued - size) / survey.fleet_rate)
    if start_now_end > best_seconds:
        return best[-1]  # the queue behind outlasts the op wherever it runs: use every slot
    if _wait_end(survey.full, best_seconds, queued, model, now) < start_now_end * WAIT_MARGIN:
        return None
    return best[-1]


_Candidate = tuple[float, int, str, Worker]  # seconds for the op, then least recently used


@dataclass(slots=True)
class _Survey:
    best: _Candidate | None = None
    best_gpu: _Candidate | None = None  # the GPU-first rule, until a GPU worker is measured
    gpu_measured: bool = False
    prefer_gpu: bool = False
    full: list[tuple[float, float, Worker]] = field(default_factory=list)  # seconds, rate
    fleet_rate: float = 0.0  # units per second over every slot that could run the op

    def best_free(self) -> _Candidate | None:
        if self.prefer_gpu and not self.gpu_measured and self.best_gpu is not None:
            return self.best_gpu
        return self.best


def _survey(op: Operation, workers: Iterable[Worker], model: RuntimeModel, size: float) -> _Survey:
    """One pass over the workers: the best free ones, the full ones, the fleet's rate."""
    gpu_asked = op.requirements.gpu != "none"
    measured = model.rates(op.operation_type)
    normalised = model.normalised_cost(op.operation_type)
    survey = _Survey(prefer_gpu=op.requirements.gpu == "preferred")
    for worker in workers:
        if worker.draining or worker.unavailable_since is not None:
            continue
        if not can_ever_run(op, worker):
            continue
        caps = worker.capabilities
        unit = measured.get(worker.worker_id)
        if unit is None:
            speed = declared_capacity(worker, gpu_asked=gpu_asked, gpu_speedup=model.gpu_speedup)
            unit = normalised / speed
        elif caps.gpu:
            survey.gpu_measured = True
        survey.fleet_rate += caps.slots / unit
        if len(worker.reserved) >= caps.slots:
            survey.full.append((size * unit, caps.slots / unit, worker))
            continue
        candidate = (size * unit, worker.last_dispatch_seq, worker.worker_id, worker)
        if survey.best is None or candidate[:3] < survey.best[:3]:
            survey.best = candidate
        if caps.gpu and (survey.best_gpu is None or candidate[:3] < survey.best_gpu[:3]):
            survey.best_gpu = candidate
    return survey


def _wait_end(
    full: list[tuple[float, float, Worker]],
    best_seconds: float,
    queued: float,
    model: RuntimeModel,
    now: datetime,
) -> float:
    """When the op and the work queued behind it would be done by the busy workers faster than
    the best free one, counted from now (inf: there are none)."""
    rate, soonest, first_release = 0.0, math.inf, math.inf
    for seconds, worker_rate, worker in full:
        if seconds >= best_seconds:
            continue
        release = model.next_release(worker.worker_id)
        if release is None:
            continue
        wait_s = max(0.0, (release - now).total_seconds())
        rate += worker_rate
        soonest = min(soonest, wait_s + seconds)
        first_release = min(first_release, wait_s)
    if rate == 0.0:
        return math.inf
    return max(soonest, first_release + queued / rate)


POLICIES: Final[dict[str, PlacementPolicy]] = {"round_robin": round_robin, "capacity": capacity}
POLICY_NAMES: Final[tuple[str, ...]] = ("round_robin", "capacity", "fastest")


def make_policy(name: str, model: RuntimeModel) -> PlacementPolicy:
    """The policy called `name`; `fastest` reads `model`, which the caller keeps current."""
    if name == "fastest":

        def fastest_with_model(
            op: Operation, workers: Iterable[Worker], now: datetime
        ) -> Worker | None:
            return fastest(op, workers, now, model=model)

        return fastest_with_model
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(
            f"unknown placement policy {name!r} (one of {', '.join(POLICY_NAMES)})"
        ) from None
