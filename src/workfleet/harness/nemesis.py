"""A nemesis schedule is data: faults at times, generated from a seed, printed, and replayed
from its JSON, so any failing run can be run again exactly (as Jepsen and etcd do).

Each fault is followed by its repair before the schedule ends: kill -> restart (the same
worker id), pause (SIGSTOP) -> resume (SIGCONT), partition -> heal, slow (latency with jitter
on the worker's links) -> heal. A partition or a slow link has a direction: `both`, `in`
(backend -> worker calls: dispatches, health checks) or `out` (worker -> backend calls:
registration, results)."""

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Literal

Action = Literal["kill", "restart", "pause", "resume", "partition", "slow", "heal"]
FAULTS: dict[Action, Action] = {
    "kill": "restart",
    "pause": "resume",
    "partition": "heal",
    "slow": "heal",
}
EVERY_FAULT: tuple[Action, ...] = ("kill", "pause", "partition", "slow")
LINK_FAULTS = ("partition", "slow")  # the ones with a direction
DIRECTIONS = ("both", "in", "out")


@dataclass(frozen=True, slots=True, order=True)
class Step:
    at_s: float
    action: Action
    target: str
    direction: str | None = None  # link faults and their heals only

    def describe(self) -> str:
        how = f" ({self.direction})" if self.direction else ""
        return f"{self.at_s:7.2f} s  {self.action:<9} {self.target}{how}"


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    duration_s: float
    steps: tuple[Step, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        head = f"nemesis seed={self.seed} duration={self.duration_s:g} s, {len(self.steps)} steps"
        return "\n".join([head, *(f"  {step.describe()}" for step in self.steps)])

    def to_json(self) -> str:
        return json.dumps(
            {
                "seed": self.seed,
                "duration_s": self.duration_s,
                "steps": [asdict(s) for s in self.steps],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "Schedule":
        data = json.loads(text)
        steps = tuple(Step(**step) for step in data["steps"])
        for step in steps:
            if step.action not in (*FAULTS, *FAULTS.values()):
                raise ValueError(f"unknown nemesis action {step.action!r}")
        return cls(int(data["seed"]), float(data["duration_s"]), tuple(sorted(steps)))


def generate(
    seed: int,
    targets: list[str],
    duration_s: float,
    *,
    gap_s: tuple[float, float] = (2.0, 4.0),
    hold_s: tuple[float, float] = (1.0, 5.0),
    faults: tuple[Action, ...] = EVERY_FAULT,
    max_faulty: int | None = None,
) -> Schedule:
    """A fault every `gap_s` (uniform), each held `hold_s` (uniform) then repaired, on a
    target not already faulty; at most `max_faulty` at once (default: fewer than half, so
    the fleet keeps capacity); every repair falls inside `duration_s`."""
    if not targets:
        raise ValueError("a nemesis needs at least one target")
    rng = random.Random(seed)
    limit = max_faulty if max_faulty is not None else max(1, (len(targets) - 1) // 2)
    steps: list[Step] = []
    busy_until: dict[str, float] = {}
    t = rng.uniform(*gap_s)
    while t < duration_s:
        t = round(t, 2)
        free = [w for w in targets if busy_until.get(w, -1.0) + 0.5 < t]  # a moment to recover
        faulty = sum(1 for until in busy_until.values() if until >= t)
        end = round(t + rng.uniform(*hold_s), 2)
        if free and faulty < limit and end <= duration_s:
            target = rng.choice(free)
            fault: Action = rng.choice(faults)
            direction = rng.choice(DIRECTIONS) if fault in LINK_FAULTS else None
            steps += [
                Step(t, fault, target, direction),
                Step(end, FAULTS[fault], target, direction),
            ]
            busy_until[target] = end
        t += rng.uniform(*gap_s)
    return Schedule(seed, duration_s, tuple(sorted(steps)))
