"""Fault scenarios: processes killed, paused, cut off or restarted while operations run; a
seeded random mix of all of them and of slow links (nemesis)."""

import asyncio
import contextlib
import random
import time

from workfleet.harness.ledger import TERMINAL, BackendMetrics
from workfleet.harness.nemesis import EVERY_FAULT, Action, Step, generate
from workfleet.harness.run import (
    Options,
    Result,
    Run,
    Scenario,
    busy_worker,
    fleet,
    heal_all,
    keep_fed,
    options_of,
    sleep_params,
    status_is,
)
from workfleet.protocol import OperationView

SLOW_S, SLOW_JITTER_S = 0.2, 0.1  # nemesis: a slow link, each way (the jitter scenario's default)


async def cascading(run: Run, opts: Options) -> Result:
    """Kill half the workers (5 of 10 by default) one by one while the operations run: every
    operation completes, on the survivors."""
    workers, count = opts.workers or 10, opts.operations or 100
    op_s = opts.op_seconds or 1.0
    names = await fleet(run, workers)
    await run.submit_all(count, sleep_params(op_s))
    rng = random.Random(opts.seed)
    victims = rng.sample(names, workers // 2)
    for victim in victims:
        await asyncio.sleep(rng.uniform(1.0, 2.0))
        run.kill(victim)
    result = await run.finish("cascading", options_of(opts, workers, count, op_s), drain_s=120)
    result.figures["killed"] = victims
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    return result


async def partition(run: Run, opts: Options) -> Result:
    """Cut a worker off (both directions) while it runs an operation: unavailable after the
    failure threshold; heal: available again, and everything completes once."""
    workers, count = opts.workers or 3, opts.operations or 12
    op_s = opts.op_seconds or 1.0
    names = await fleet(run, workers, proxied=True)
    ids = await run.submit_all(count, sleep_params(op_s))
    victim, _ = await busy_worker(run, ids, names)
    run.partition(victim)
    cut = time.monotonic()
    await run.wait_until(
        lambda: status_is(run, victim, "temporarily_unavailable"), "unavailable", 30
    )
    detected_s = time.monotonic() - cut
    run.mark(f"{victim} unavailable")
    await asyncio.sleep(1.0)
    run.partition(victim, heal=True)
    healed = time.monotonic()
    await run.wait_until(lambda: status_is(run, victim, "available", "busy"), "back", 30)
    back_s = time.monotonic() - healed
    run.mark(f"{victim} available")
    result = await run.finish("partition", options_of(opts, workers, count, op_s), drain_s=90)
    timing = run.cluster.timing
    result.figures |= {
        "victim": victim,
        "unavailable_after_s": round(detected_s, 2),
        "threshold_s": timing.health_interval_s * timing.failure_threshold,
        "available_after_heal_s": round(back_s, 2),
    }
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    return result


async def frozen(run: Run, opts: Options) -> Result:
    """SIGSTOP a worker running an operation; once the operation runs again elsewhere (and
    the frozen attempt has ended in its executor), SIGCONT: the frozen attempt's late report
    is refused as stale and counted, and the re-run's outcome stands. Which report arrives
    first is a race: its result (a refused completion), or a progress report whose refusal
    makes the worker drop the attempt before it sends the result."""
    workers, count = opts.workers or 2, opts.operations or 1
    op_s = opts.op_seconds or 2.0
    names = await fleet(run, workers)
    ids = await run.submit_all(count, sleep_params(op_s))
    victim, op_id = await busy_worker(run, ids, names)
    run.pause(victim)
    paused = time.monotonic()

    async def rerun() -> bool:
        op = await run.operation(op_id)
        return op.attempt >= 2 and op.worker_id != victim

    await run.wait_until(rerun, "the re-dispatch", 30)
    run.mark(f"{op_id[:8]} re-dispatched")
    await asyncio.sleep(max(0.0, op_s + 0.2 - (time.monotonic() - paused)))
    run.resume(victim)

    async def refused() -> bool:
        return sum(BackendMetrics.parse(await run.client.metrics()).stale.values()) >= 1

    with contextlib.suppress(TimeoutError):
        await run.wait_until(refused, "the late report to be refused", 15)
    result = await run.finish("frozen", options_of(opts, workers, count, op_s), drain_s=60)
    result.figures["victim"] = victim
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    result.checks["late_report_refused"] = (
        sum(result.figures["stale_reports_by_kind"].values()) >= 1
    )
    result.checks["ran_twice"] = result.ledger.duplicate_executions >= 1
    return result


async def poison(run: Run, opts: Options) -> Result:
    """An operation that takes down every worker that runs it (diagnostic `crash_worker`
    SIGKILLs its worker process); the harness notices each death and starts that worker
    again. The operation fails after the backend's attempt budget, having cost at most that
    many workers; the other operations complete."""
    workers, count = opts.workers or 4, opts.operations or 20
    op_s = opts.op_seconds or 0.5
    budget = opts.max_losses or 3  # the backend's default attempt budget
    names = await fleet(run, workers)
    poisoned = await run.submit({"action": "crash_worker"})
    assert poisoned is not None
    await run.submit_all(count, sleep_params(op_s))
    stop = asyncio.Event()
    reviving = run.in_background(revive_the_dead(run, names, stop))

    async def final() -> OperationView | None:
        op = await run.operation(poisoned)
        return op if op.status in TERMINAL else None

    await run.wait_until(final, "the poison operation to end", 120)
    result = await run.finish("poison", options_of(opts, workers, count, op_s), drain_s=90)
    stop.set()
    died = await reviving
    ended = await run.operation(poisoned)
    result.figures |= {
        "poison_status": ended.status,
        "poison_error": f"{ended.error.type}: {ended.error.message}" if ended.error else None,
        "workers_killed": len(died),
    }
    result.checks["poison_failed"] = ended.status == "failed" and ended.error is not None
    result.checks["at_most_budget_workers_lost"] = 1 <= len(died) <= budget
    result.checks["others_completed"] = result.ledger.outcomes.get("completed", 0) == count
    return result


async def revive_the_dead(run: Run, names: list[str], stop: asyncio.Event) -> list[str]:
    """Start again each worker whose process died, until `stop`; returns who died, in order."""
    died: list[str] = []
    while not stop.is_set():
        for name in names:
            if not run.worker(name).alive():
                died.append(name)
                run.mark(f"{name} died (exit {run.worker(name).popen.returncode})")
                await run.restart(name)
        await asyncio.sleep(0.05)
    return died


async def backend_kill(run: Run, opts: Options) -> Result:
    """SIGKILL the backend twice while operations are submitted and running, restart it on
    the same database: no acknowledged operation is lost, every one ends once; submits that
    met the dead backend are retried with their idempotency key."""
    workers, count = opts.workers or 4, opts.operations or 60
    op_s = opts.op_seconds or 0.4
    await fleet(run, workers, slots=2)
    rng = random.Random(opts.seed)

    async def submitter() -> None:
        for _ in range(count):
            await run.submit(sleep_params(op_s), deadline_s=90)
            await asyncio.sleep(0.05)

    feeding = run.in_background(submitter())
    for _ in range(2):
        await asyncio.sleep(rng.uniform(1.5, 3.0))
        await run.restart_backend()
    await feeding
    result = await run.finish("backend-kill", options_of(opts, workers, count, op_s), drain_s=120)
    result.figures["indeterminate_submits_retried"] = sum(
        1 for e in run.history.events if e["kind"] == "info"
    )
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    return result


async def nemesis(run: Run, opts: Options) -> Result:
    """A seeded random schedule of kills (then restarts), pauses (then resumes) and
    partitions of one or both directions (then heals) while operations keep arriving; then
    heal everything, drain and check the ledger. Replay with --schedule FILE."""
    workers = opts.workers or 6
    op_s = opts.op_seconds or 1.0
    names = await fleet(run, workers, proxied=True)
    schedule = opts.schedule or generate(opts.seed, names, opts.duration_s, faults=kinds(run))
    run.say(schedule.describe())
    stop = asyncio.Event()
    feeding = run.in_background(keep_fed(run, 2 * workers, op_s, stop))  # 2 per worker
    began = time.monotonic()
    for step in schedule.steps:
        await asyncio.sleep(max(0.0, step.at_s - (time.monotonic() - began)))
        await _apply(run, step)
    await asyncio.sleep(max(0.0, schedule.duration_s - (time.monotonic() - began)))
    stop.set()
    await feeding
    await heal_all(run, names)
    healed_at = run.now()
    run.mark("all healed")
    await run.wait_until(lambda: all_working(run, names), "every worker back", 60)
    fleet_back_s = run.now() - healed_at
    options = options_of(opts, workers, None, op_s) | {"duration_s": schedule.duration_s}
    result = await run.finish("nemesis", options, drain_s=120)
    result.schedule = schedule
    result.figures |= {
        "steps": len(schedule.steps),
        "fleet_back_after_heal_s": round(fleet_back_s, 2),
        # the recovery time: from the last heal until the last operation is final
        "recovered_after_heal_s": round(max(result.finished_at, default=healed_at) - healed_at, 2),
    }
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == len(
        run.history.acknowledged()
    )
    return result


def kinds(run: Run) -> tuple[Action, ...]:
    """The faults a nemesis draws from: no slow links under netns (no netem on this kernel;
    latency lives in the proxies, which netns runs without)."""
    if run.cluster.fabric is None:
        return EVERY_FAULT
    return tuple(fault for fault in EVERY_FAULT if fault != "slow")


async def _apply(run: Run, step: Step) -> None:
    if step.action == "slow":
        for proxy in run.proxies(step.target, step.direction or "both"):
            proxy.latency(SLOW_S, SLOW_JITTER_S)
        run.mark(f"slow {step.target} ({step.direction})")
    elif step.action == "kill":
        run.kill(step.target)
    elif step.action == "restart":
        await run.restart(step.target, proxied=True)
    elif step.action == "pause":
        run.pause(step.target)
    elif step.action == "resume":
        run.resume(step.target)
    else:
        run.partition(step.target, step.direction or "both", heal=step.action == "heal")


async def all_working(run: Run, names: list[str]) -> bool:
    states = {w.worker_id: w.status for w in (await run.client.workers()).items}
    return all(states.get(name) in ("available", "busy") for name in names)


def _cascading_env(opts: Options) -> dict[str, str]:
    # each kill may cost an operation one attempt (it ran there, or was sent there before the
    # death was noticed): a budget above the kills, so no unlucky operation runs out
    return {"WORKFLEET_MAX_LOSSES": str((opts.workers or 10) // 2 + 1)}


SCENARIOS = {
    "cascading": Scenario(cascading, _cascading_env),
    "partition": Scenario(partition, netns=True),
    "frozen": Scenario(frozen),
    "poison": Scenario(poison),
    "backend-kill": Scenario(backend_kill),
    "nemesis": Scenario(nemesis, netns=True),
}
