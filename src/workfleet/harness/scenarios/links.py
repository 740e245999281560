"""Link faults between the backend and its workers, through each worker's proxy pair
(harness/proxy.py): answers lost on their way back (a dispatch's, a result's), a link that
flaps, latency with jitter on every link, a partition longer than the removal time."""

import asyncio
import random
import time
from typing import Any

from workfleet.harness.cluster import FAST
from workfleet.harness.proxy import Proxy
from workfleet.harness.run import (
    Options,
    Result,
    Run,
    Scenario,
    busy_worker,
    fleet,
    keep_fed,
    options_of,
    sleep_params,
    status_is,
)
from workfleet.harness.stats import distribution
from workfleet.protocol import OperationView

REMOVAL_S = 3.0  # long-partition: the backend forgets a worker unavailable this long
PACE_S = 0.4  # jitter: one submit every PACE_S, so capacity is idle for each


async def lost_dispatch_response(run: Run, opts: Options) -> Result:
    """Each operation is dispatched while the workers' answers to the backend are lost (the
    answers lost until it starts): the worker accepts and runs it, the backend's POST times
    out unconfirmed. The worker's own reports (health, result) confirm the attempt first, so
    each operation runs once, under its first lease, and completes once."""
    workers, count = opts.workers or 2, opts.operations or 3
    op_s = opts.op_seconds or 1.0
    names = await fleet(run, workers, proxied=True)
    inbound = [proxy for name in names for proxy in run.proxies(name, "in")]
    for _ in range(count):
        await run.wait_until(lambda: idle_worker(run, names), "an idle worker", 60)
        await submit_unanswered(run, inbound, sleep_params(op_s))
    timeout_s = 3 * run.cluster.timing.dispatch_timeout_s + 10
    await run.wait_until(lambda: unconfirmed(run, count), "the dispatches to time out", timeout_s)
    result = await run.finish(
        "lost-dispatch-response", options_of(opts, workers, count, op_s), drain_s=60
    )
    dispatches_unconfirmed = len(unconfirmed_dispatches(run))
    result.figures |= {
        "responses_lost": lost_on(inbound),
        "dispatches_unconfirmed": dispatches_unconfirmed,
    }
    result.checks |= {
        "all_completed": result.ledger.outcomes.get("completed", 0) == count,
        "every_answer_lost": dispatches_unconfirmed >= count,
        "each_ran_once_under_its_first_lease": result.ledger.executions == count
        and result.figures["ops"]["max_attempt"] == 1,
    }
    return result


async def lost_result_ack(run: Run, opts: Options) -> Result:
    """The workers' reports reach the backend but its answers are lost: the backend records
    the results; each worker hears nothing, times out and sends them again (its reports
    wait meanwhile), and the backend answers a result it already has as delivered: one final
    record each, none refused as stale, nothing left undelivered on a worker."""
    workers, count = opts.workers or 1, opts.operations or 3
    names = await fleet(run, workers, proxied=True)
    outbound = [proxy for name in names for proxy in run.proxies(name, "out")]
    for proxy in outbound:
        proxy.lose_responses()
    run.mark("answers to the workers lost")
    ids = await run.submit_all(count, {"action": "noop"})
    await run.wait_until(lambda: completed(run, ids), "a result recorded", 30)
    for proxy in outbound:
        proxy.heal()
    run.mark("answers flow again")
    await run.wait_until(lambda: all_delivered(run, names, ids), "the results sent again", 90)
    run.mark("every result delivered")
    result = await run.finish("lost-result-ack", options_of(opts, workers, count, 0.0), drain_s=60)
    result.figures["responses_lost"] = lost_on(outbound)
    result.checks |= {
        "all_completed": result.ledger.outcomes.get("completed", 0) == count,
        "an_answer_was_lost": lost_on(outbound) >= 1,
        "resent_result_answered_as_delivered": not result.figures["stale_reports_by_kind"].get(
            "completion"
        ),
    }
    return result


async def flapping(run: Run, opts: Options) -> Result:
    """One worker's link goes down and up every 1-2 s for --flap-seconds (20 by default)
    while operations keep coming
    (about two per worker queued or running): the worker goes unavailable at most once per
    cut and is never removed, no operation runs out of attempts, all complete."""
    workers = opts.workers or 4
    op_s = opts.op_seconds or 1.0
    names = await fleet(run, workers, proxied=True)
    flapper = names[0]
    rng = random.Random(opts.seed)
    stop = asyncio.Event()
    feeding = run.in_background(keep_fed(run, 2 * workers, op_s, stop))
    cuts = 0
    began = time.monotonic()
    while time.monotonic() - began < opts.flap_s:
        run.partition(flapper)
        cuts += 1
        await asyncio.sleep(rng.uniform(1.0, 2.0))
        run.partition(flapper, heal=True)
        await asyncio.sleep(rng.uniform(1.0, 2.0))
    stop.set()
    await feeding
    options = options_of(opts, workers, None, op_s) | {"flap_s": opts.flap_s}
    result = await run.finish("flapping", options, drain_s=90)
    changes = [e for e in run.backend_events("worker_status_changed") if e["worker_id"] == flapper]
    unavailable = sum(1 for e in changes if e["after"] == "temporarily_unavailable")
    result.figures |= {
        "flapper": flapper,
        "cuts": cuts,
        "times_unavailable": unavailable,
        "status_changes": len(changes),
    }
    result.checks |= {
        "all_completed": result.ledger.outcomes.get("completed", 0)
        == len(run.history.acknowledged()),
        "unavailable_at_most_once_per_cut": unavailable <= cuts,
        "never_removed": not run.backend_events("worker_removed"),
        "flapper_back": await status_is(run, flapper, "available", "busy"),
    }
    return result


async def jitter(run: Run, opts: Options) -> Result:
    """Latency of delay ± jitter (--latency-ms, --jitter-ms: 200 ± 100 ms by default) on each
    way of every link (a round trip pays it twice), with the backend's health timeout above
    the worst round trip: no worker is ever marked unavailable, and dispatch latency grows by
    about the round trip. Dispatch latency
    (acknowledged - created, capacity idle) is measured before the latency and under it."""
    workers, count = opts.workers or 3, opts.operations or 20
    op_s = opts.op_seconds or 0.1
    delay_s, jitter_s = opts.latency_ms / 1000, opts.jitter_ms / 1000
    names = await fleet(run, workers, proxied=True)
    reference = await paced(run, count, op_s)
    await run.drain(60)
    for name in names:
        for proxy in run.proxies(name):
            proxy.latency(delay_s, jitter_s)
    run.mark(f"latency {delay_s * 1000:g} ± {jitter_s * 1000:g} ms each way")
    jittered = await paced(run, count, op_s)
    options = options_of(opts, workers, 2 * count, op_s) | {
        "delay_ms": opts.latency_ms,
        "jitter_ms": opts.jitter_ms,
    }
    result = await run.finish("jitter", options, drain_s=90)
    records = {op.operation_id: op for op in await run.records()}
    changes = run.backend_events("worker_status_changed")
    unavailable = sum(1 for e in changes if e["after"] == "temporarily_unavailable")
    result.figures |= {
        "dispatch_ms_reference": dispatch_ms([records[i] for i in reference]),
        "dispatch_ms_jittered": dispatch_ms([records[i] for i in jittered]),
        "health_timeout_s": health_timeout_s(delay_s, jitter_s),
        "times_unavailable": unavailable,
    }
    result.checks |= {
        "all_completed": result.ledger.outcomes.get("completed", 0) == 2 * count,
        "no_false_unavailable": unavailable == 0,
    }
    return result


async def long_partition(run: Run, opts: Options) -> Result:
    """Cut a busy worker off for longer than the removal time (REMOVAL_S here): unavailable,
    then removed (its operation runs elsewhere); healed, it registers again as a new entry
    and gets work again; every operation completes once."""
    workers, count = opts.workers or 3, opts.operations or 6
    op_s = opts.op_seconds or 1.0
    names = await fleet(run, workers, proxied=True)
    ids = await run.submit_all(count, sleep_params(op_s))
    victim, _ = await busy_worker(run, ids, names)
    run.partition(victim)

    async def removed() -> bool:
        return await run.worker_status(victim) is None

    await run.wait_until(removed, "the worker to be removed", 60)
    run.mark(f"{victim} removed")
    run.partition(victim, heal=True)
    healed_at = time.time()
    await run.wait_until(lambda: status_is(run, victim, "available", "busy"), "it back", 30)
    run.mark(f"{victim} registered again")
    await run.submit_all(2 * workers, sleep_params(op_s))  # enough for every worker to get one
    total = count + 2 * workers
    result = await run.finish("long-partition", options_of(opts, workers, total, op_s), drain_s=90)
    registered = [
        e
        for e in run.backend_events("worker_registered")
        if e["worker_id"] == victim and e["new_instance"]
    ]
    worked_again = [
        r
        for r in run.executions()
        if r["worker_id"] == victim and r["event"] == "started" and float(r["ts"]) > healed_at
    ]
    result.figures |= {
        "victim": victim,
        "removal_s": REMOVAL_S,
        "new_registrations": len(registered),
        "started_after_heal": len(worked_again),
    }
    result.checks |= {
        "all_completed": result.ledger.outcomes.get("completed", 0) == total,
        "removed": any(e["worker_id"] == victim for e in run.backend_events("worker_removed")),
        "registered_again_as_new": len(registered) == 2,  # at start, then after the removal
        "got_work_again": bool(worked_again),
    }
    return result


# ---- what these scenarios look at -------------------------------------------------------


async def idle_worker(run: Run, names: list[str]) -> bool:
    page = await run.client.workers()
    return any(w.worker_id in names and w.status == "available" for w in page.items)


async def submit_unanswered(run: Run, inbound: list[Proxy], params: dict[str, Any]) -> None:
    """Submit one operation while the answers on `inbound` links are lost, until it starts."""
    for proxy in inbound:
        proxy.lose_responses()
    run.mark("answers to the backend lost")
    op_id = await run.submit(params)
    assert op_id is not None
    where = await run.wait_until(lambda: started_on(run, op_id), "it to start", 30)
    for proxy in inbound:
        proxy.heal()
    run.mark(f"{op_id[:8]} started on {where}; answers flow again")


async def started_on(run: Run, op_id: str) -> str | None:
    """The worker whose execution log says it started the operation (None: not yet)."""
    return next(
        (
            str(r["worker_id"])
            for r in run.executions()
            if r["operation_id"] == op_id and r["event"] == "started"
        ),
        None,
    )


def unconfirmed_dispatches(run: Run) -> list[dict[str, Any]]:
    """Dispatches whose answer the backend never got (its POST timed out or broke)."""
    return [e for e in run.backend_events("dispatch_failed") if e.get("kind") == "unconfirmed"]


async def unconfirmed(run: Run, count: int) -> bool:
    return len(unconfirmed_dispatches(run)) >= count


async def completed(run: Run, ids: list[str]) -> bool:
    """At least one of them recorded completed."""
    for op_id in ids:
        if (await run.operation(op_id)).status == "completed":
            return True
    return False


async def all_delivered(run: Run, names: list[str], ids: list[str]) -> bool:
    """Every operation recorded final, and no worker holds a result it still has to send."""
    for op_id in ids:
        if (await run.operation(op_id)).status != "completed":
            return False
    for name in names:
        health = await run.worker_health(name)
        if health is None or health.running:
            return False
    return True


def lost_on(proxies: list[Proxy]) -> int:
    return sum(proxy.responses_lost for proxy in proxies)


async def paced(run: Run, count: int, op_s: float) -> list[str]:
    """`count` operations, one every PACE_S (open loop), so each finds capacity idle."""
    ids = []
    for _ in range(count):
        began = time.monotonic()
        op_id = await run.submit(sleep_params(op_s))
        if op_id is not None:
            ids.append(op_id)
        await asyncio.sleep(max(0.0, PACE_S - (time.monotonic() - began)))
    return ids


def dispatch_ms(ops: list[OperationView]) -> dict[str, float]:
    """Dispatch latency (acknowledged by the worker - accepted from the client), with N."""
    return distribution(
        [
            (op.dispatched_at - op.created_at).total_seconds()
            for op in ops
            if op.dispatched_at is not None
        ]
    )


def health_timeout_s(delay_s: float, jitter_s: float) -> float:
    """Twice the worst round trip (each way delay + jitter), so no check fails for latency;
    never below the usual timeout (no latency is no reason to wait less)."""
    return max(FAST.health_timeout_s, round(2 * 2 * (delay_s + jitter_s), 2))


def _jitter_env(opts: Options) -> dict[str, str]:
    timeout_s = health_timeout_s(opts.latency_ms / 1000, opts.jitter_ms / 1000)
    # the backend refuses a timeout above 10 intervals: a long latency stretches the interval
    interval_s = max(FAST.health_interval_s, timeout_s / 10)
    return {
        "WORKFLEET_HEALTH_TIMEOUT_S": str(timeout_s),
        "WORKFLEET_HEALTH_INTERVAL_S": str(interval_s),
    }


SCENARIOS = {
    "lost-dispatch-response": Scenario(lost_dispatch_response),
    "lost-result-ack": Scenario(lost_result_ack),
    "flapping": Scenario(flapping, netns=True),
    "jitter": Scenario(jitter, _jitter_env),
    "long-partition": Scenario(
        long_partition, lambda _: {"WORKFLEET_WORKER_REMOVAL_S": str(REMOVAL_S)}, netns=True
    ),
}
