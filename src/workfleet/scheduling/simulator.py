"""A discrete-event simulation of the backend's dispatching, with the real placement policies.

Time is simulated (seconds from 0, handed to the domain as datetimes from `EPOCH`); nothing
reads a clock. The loop does what the orchestrator does: pending operations wait in a
`FairQueue` (priority with aging, then fair share between submitters); after every event the
dispatcher ranks the queue's heads and gives the first one the policy places a slot, until no
head can be placed. The policy sees the same `Operation` and `Worker` objects it sees in the
backend, and `fastest` a `RuntimeModel` kept current the way the backend keeps it (queued,
started, observed, stopped). An operation runs for its work / the worker's speed for its type;
there are no failures and no dispatch latency.

Figures, per policy:
- makespan: when the last operation ends (the workload starts at 0);
- lower_bound and ratio = makespan / lower_bound (see `bounds.lower_bound`);
- wait_mean, wait_p95: seconds from submit to dispatch;
- utilisation: busy slot-seconds / (slots x makespan);
- jain: Jain's index over the submitters' normalised throughput, each submitter's slot-seconds
  received divided by its max-min fair share of slot-seconds (water-filling the fleet's slots
  over the submitters' demands, a demand being the operations it has pending or running),
  both summed over the time the submitter had work. 1.0 means every submitter got its fair
  share (or more: a share nobody else asked for); one submitter alone scores 1.0.
"""

import heapq
import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Final

from workfleet.domain.fairness import Aging, FairQueue, ShareLedger
from workfleet.domain.placement import make_policy
from workfleet.domain.runtime import RuntimeModel
from workfleet.domain.workers import Worker
from workfleet.scheduling.bounds import jain_index, lower_bound, max_min_shares, percentile
from workfleet.scheduling.scenario import EPOCH, Scenario, SimOperation

FIGURES: Final = (
    "makespan",
    "lower_bound",
    "ratio",
    "wait_mean",
    "wait_p95",
    "utilisation",
    "jain",
)


@dataclass(frozen=True, slots=True)
class PolicyReport:
    policy: str
    makespan: float
    lower_bound: float
    ratio: float
    wait_mean: float
    wait_p95: float
    utilisation: float
    jain: float
    completed_by_worker: Mapping[str, int]

    def figures(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in FIGURES}


def simulate(scenario: Scenario, policy_name: str, *, bound: float | None = None) -> PolicyReport:
    """Run the scenario under one policy (`bound`: the lower bound, if already computed)."""
    run = _Run(scenario, policy_name)
    run.until_done()
    lb = lower_bound(scenario.workers, scenario.operations) if bound is None else bound
    return run.report(lb)


def compare(scenario: Scenario, policy_names: Sequence[str]) -> list[PolicyReport]:
    bound = lower_bound(scenario.workers, scenario.operations)
    return [simulate(scenario, name, bound=bound) for name in policy_names]


class _Run:
    def __init__(self, scenario: Scenario, policy_name: str) -> None:
        self.scenario = scenario
        self.policy_name = policy_name
        self.model = RuntimeModel()
        self.policy = make_policy(policy_name, self.model)
        self.queue = FairQueue(Aging(scenario.aging_interval_s))
        self.ledger = ShareLedger()
        self.workers: list[Worker] = [sim.worker for sim in scenario.workers]
        self.position = {w.worker_id: i for i, w in enumerate(self.workers)}
        self.sims = {op.operation.operation_id: op for op in scenario.operations}
        self.total_slots = sum(w.capabilities.slots for w in self.workers)
        self.free_slots = self.total_slots
        self.completions: list[tuple[float, int, str, str]] = []  # end, seq, operation, worker
        self.dispatch_seq = itertools.count(1)
        self.now_s = 0.0
        self.waits: list[float] = []
        self.busy_slot_s = 0.0
        self.completed: dict[str, int] = dict.fromkeys(self.position, 0)
        self.pending_by: dict[str, int] = {}
        self.running_by: dict[str, int] = {}
        self.received: dict[str, float] = {}
        self.entitled: dict[str, float] = {}

    def until_done(self) -> None:
        arrivals = self.scenario.operations
        next_arrival = 0
        while next_arrival < len(arrivals) or self.completions:
            t = min(
                arrivals[next_arrival].submit_s if next_arrival < len(arrivals) else float("inf"),
                self.completions[0][0] if self.completions else float("inf"),
            )
            self._advance(t)
            while self.completions and self.completions[0][0] <= t:
                _, _, operation_id, worker_id = heapq.heappop(self.completions)
                self._complete(operation_id, worker_id)
            while next_arrival < len(arrivals) and arrivals[next_arrival].submit_s <= t:
                self._arrive(arrivals[next_arrival])
                next_arrival += 1
            self._dispatch()

    def _advance(self, t: float) -> None:
        """Account for the time since the last event (nothing changed in between)."""
        elapsed = t - self.now_s
        if elapsed > 0:
            self.busy_slot_s += (self.total_slots - self.free_slots) * elapsed
            submitters = [s for s in self.pending_by if self._demand(s) > 0]
            demands = [self._demand(s) for s in submitters]
            shares = max_min_shares(demands, self.total_slots)
            for submitter, share in zip(submitters, shares, strict=True):
                running = self.running_by.get(submitter, 0)
                self.received[submitter] = self.received.get(submitter, 0.0) + running * elapsed
                self.entitled[submitter] = self.entitled.get(submitter, 0.0) + share * elapsed
        self.now_s = t

    def _demand(self, submitter: str) -> int:
        return self.pending_by.get(submitter, 0) + self.running_by.get(submitter, 0)

    def _arrive(self, sim: SimOperation) -> None:
        op = sim.operation
        self.queue.push(op)
        self.model.queued(op)
        self.pending_by[op.owner] = self.pending_by.get(op.owner, 0) + 1

    def _dispatch(self) -> None:
        now = EPOCH + timedelta(seconds=self.now_s)
        while self.free_slots and len(self.queue):
            for key, op, _ in self.queue.heads(now, self.ledger):
                worker = self.policy(op, self.workers, now)
                if worker is not None:
                    self.queue.pop(key)
                    self._start(self.sims[op.operation_id], worker)
                    break
            else:
                return

    def _start(self, sim: SimOperation, worker: Worker) -> None:
        op = sim.operation
        now = EPOCH + timedelta(seconds=self.now_s)
        index = self.position[worker.worker_id]
        if len(worker.reserved) >= worker.capabilities.slots:
            raise AssertionError(f"{self.policy_name} placed {op.operation_id} on a full worker")
        self.workers[index] = replace(
            worker,
            reserved=worker.reserved | {op.operation_id},
            last_dispatch_seq=next(self.dispatch_seq),
        )
        self.free_slots -= 1
        self.model.started(op, worker, at=now)
        self.ledger.started(op.owner)
        self.pending_by[op.owner] -= 1
        self.running_by[op.owner] = self.running_by.get(op.owner, 0) + 1
        self.waits.append(self.now_s - sim.submit_s)
        seconds = self.scenario.workers[index].seconds(op.operation_type, sim.work)
        entry = (self.now_s + seconds, next(self.dispatch_seq), op.operation_id, worker.worker_id)
        heapq.heappush(self.completions, entry)

    def _complete(self, operation_id: str, worker_id: str) -> None:
        sim = self.sims[operation_id]
        op = sim.operation
        index = self.position[worker_id]
        worker = self.workers[index]
        self.workers[index] = replace(worker, reserved=worker.reserved - {operation_id})
        self.free_slots += 1
        seconds = self.scenario.workers[index].seconds(op.operation_type, sim.work)
        self.model.observe(op.operation_type, worker_id, sim.size, seconds)
        self.model.stopped(operation_id)
        self.ledger.stopped(op.owner)
        self.running_by[op.owner] -= 1
        self.completed[worker_id] += 1

    def report(self, bound: float) -> PolicyReport:
        makespan = self.now_s
        normalised = [
            self.received[s] / self.entitled[s] for s in self.entitled if self.entitled[s] > 0
        ]
        return PolicyReport(
            policy=self.policy_name,
            makespan=makespan,
            lower_bound=bound,
            ratio=makespan / bound if bound > 0 else 1.0,
            wait_mean=statistics.fmean(self.waits) if self.waits else 0.0,
            wait_p95=percentile(self.waits, 95),
            utilisation=(self.busy_slot_s / (self.total_slots * makespan) if makespan > 0 else 0.0),
            jain=jain_index(normalised),
            completed_by_worker=dict(self.completed),
        )
