"""How far a schedule is from optimal: the makespan lower bound, and Jain's fairness index.

The lower bound LB is the largest of

- for each operation: its submit time + its work on the fastest worker that can run it (the
  longest operation on its fastest eligible worker, counted from when it arrives);
- for a few submit times s: s + T(s), where T(s) is the least time in which the fleet could do
  the work submitted at s or later if work could be split at will. That relaxation is a linear
  program over operation classes c (type, requirements) and pools p of identical workers:

      min T  subject to  sum_p r[c,p] t[c,p] >= W[c]  for each class,
                         sum_c t[c,p] <= T           for each pool,  t >= 0

  where W[c] is the class's work and r[c,p] the pool's rate for it (slots x speed, 0 where it
  cannot run it). Its value is at least every "work / capacity" bound: total work over total
  capacity, and the same restricted to any set of classes (GPU-only work, say) and the workers
  that can run them, which are the 0/1 points of its dual. We solve the dual, which starts
  feasible at zero: max sum_c W[c] u[c] subject to r[c,p] u[c] <= v[p], sum_p v[p] <= 1.

No schedule ends before LB, whatever the policy (tests check it on random fleets).
"""

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from workfleet.domain.operations import Operation, Requirements
from workfleet.domain.placement import can_ever_run
from workfleet.scheduling.scenario import SimOperation, SimWorker

RELEASE_CUTS = 16  # submit times at which the capacity bound is taken
_EPS = 1e-12


def lower_bound(workers: Sequence[SimWorker], operations: Sequence[SimOperation]) -> float:
    if not operations:
        return 0.0
    index: dict[tuple[str, Requirements], int] = {}
    first: list[Operation] = []  # each class's first operation
    class_of: list[int] = []
    for sim in operations:
        key = (sim.operation.operation_type, sim.operation.requirements)
        if key not in index:
            index[key] = len(first)
            first.append(sim.operation)
        class_of.append(index[key])
    speeds = np.zeros((len(first), len(workers)))  # per slot; 0: cannot run it
    for c, op in enumerate(first):
        for p, worker in enumerate(workers):
            if can_ever_run(op, worker.worker):
                speeds[c, p] = worker.speeds[op.operation_type]
    rates = speeds * np.array([w.worker.capabilities.slots for w in workers], dtype=float)
    fastest = speeds.max(axis=1)
    if not (fastest > 0).all():
        raise ValueError("an operation class can run on no worker")
    longest = max(
        sim.submit_s + sim.work / float(fastest[c])
        for sim, c in zip(operations, class_of, strict=True)
    )
    return max(longest, _capacity_bound(operations, class_of, _pools(rates)))


def _pools(rates: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Workers with the same rates for every class, merged into one of their summed rates."""
    pooled: dict[tuple[float, ...], npt.NDArray[np.float64]] = {}
    for column in rates.T:
        key = tuple(column.tolist())
        pooled[key] = pooled[key] + column if key in pooled else column.copy()
    return np.column_stack(list(pooled.values()))


def _capacity_bound(
    operations: Sequence[SimOperation], class_of: Sequence[int], rates: npt.NDArray[np.float64]
) -> float:
    submits = sorted({sim.submit_s for sim in operations})
    step = max(1, math.ceil(len(submits) / RELEASE_CUTS))
    best = 0.0
    for cut in submits[::step]:
        work = np.zeros(rates.shape[0])
        for sim, c in zip(operations, class_of, strict=True):
            if sim.submit_s >= cut:
                work[c] += sim.work
        best = max(best, cut + fractional_makespan(work, rates))
    return best


def fractional_makespan(work: npt.NDArray[np.float64], rates: npt.NDArray[np.float64]) -> float:
    """T of the linear program above: work[c] per class, rates[c, p] per class and pool."""
    used = work > 0
    work, rates = work[used], rates[used]
    if work.size == 0:
        return 0.0
    work_scale, rate_scale = float(work.max()), float(rates.max())
    work, rates = work / work_scale, rates / rate_scale
    classes, pools = rates.shape
    pairs = np.argwhere(rates > 0)
    # variables: u[0..classes), v[0..pools); rows: one per runnable (class, pool), then sum v
    matrix = np.zeros((len(pairs) + 1, classes + pools))
    for row, (c, p) in enumerate(pairs):
        matrix[row, c] = rates[c, p]
        matrix[row, classes + p] = -1.0
    matrix[-1, classes:] = 1.0
    limits = np.zeros(len(pairs) + 1)
    limits[-1] = 1.0
    objective = np.concatenate([work, np.zeros(pools)])
    return _maximise(objective, matrix, limits) * work_scale / rate_scale


def _maximise(
    objective: npt.NDArray[np.float64],
    matrix: npt.NDArray[np.float64],
    limits: npt.NDArray[np.float64],
) -> float:
    """max objective . x subject to matrix x <= limits, x >= 0, limits >= 0: the simplex
    method from the slack basis, with Bland's rule (the many zero limits make it degenerate;
    Bland's rule cannot cycle)."""
    rows, columns = matrix.shape
    tableau = np.zeros((rows + 1, columns + rows + 1))
    tableau[:rows, :columns] = matrix
    tableau[:rows, columns : columns + rows] = np.eye(rows)
    tableau[:rows, -1] = limits
    tableau[rows, :columns] = -objective
    basis = list(range(columns, columns + rows))
    tolerance = 1e-9
    for _ in range(100_000):
        improving = np.flatnonzero(tableau[rows, :-1] < -tolerance)
        if improving.size == 0:
            return float(tableau[rows, -1])
        entering = int(improving[0])
        column = tableau[:rows, entering]
        candidates = np.flatnonzero(column > tolerance)
        if candidates.size == 0:
            raise ArithmeticError("unbounded linear program")
        ratios = tableau[candidates, -1] / column[candidates]
        tied = candidates[ratios <= ratios.min() + tolerance]
        leaving = int(min(tied, key=lambda row: basis[row]))
        tableau[leaving] /= tableau[leaving, entering]
        others = np.arange(rows + 1) != leaving
        tableau[others] -= np.outer(tableau[others, entering], tableau[leaving])
        basis[leaving] = entering
    raise ArithmeticError("the simplex method did not converge")


def jain_index(values: Sequence[float]) -> float:
    """(sum x)^2 / (n sum x^2): 1 when all are equal, 1/n when one gets everything."""
    squares = sum(x * x for x in values)
    if not values or squares <= _EPS:
        return 1.0
    return sum(values) ** 2 / (len(values) * squares)


def max_min_shares(demands: Sequence[float], capacity: float) -> list[float]:
    """Max-min fair shares of `capacity` (water-filling): nobody gets more than it asks, and
    what is left is split evenly among those who ask for more."""
    shares = [0.0] * len(demands)
    left, waiting = capacity, len(demands)
    for index in sorted(range(len(demands)), key=lambda i: demands[i]):
        share = min(demands[index], left / waiting)
        shares[index] = share
        left -= share
        waiting -= 1
    return shares


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
