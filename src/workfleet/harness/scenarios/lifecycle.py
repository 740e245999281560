"""Lifecycle scenarios: a worker restarted under the same id, a crowd of workers registering
at once and again after the backend restarts."""

import time

from workfleet.harness.run import (
    Options,
    Result,
    Run,
    Scenario,
    busy_worker,
    fleet,
    options_of,
    sleep_params,
)


async def same_id_restart(run: Run, opts: Options) -> Result:
    """SIGKILL a worker running an operation and start the same worker id again at once (long
    before the backend would remove it): the new incarnation (a new instance id) takes the
    id's one registry entry; the killed attempt is superseded by a new lease, and the
    operation completes once, under it."""
    workers, count = opts.workers or 2, opts.operations or 4
    op_s = opts.op_seconds or 2.0
    names = await fleet(run, workers)
    ids = await run.submit_all(count, sleep_params(op_s))
    victim, op_id = await busy_worker(run, ids, names)
    killed_attempt = (await run.operation(op_id)).attempt
    before = await run.worker_health(victim)
    assert before is not None
    run.kill(victim)
    await run.restart(victim)

    async def new_incarnation() -> bool:
        health = await run.worker_health(victim)
        answers_anew = health is not None and health.instance_id != before.instance_id
        return answers_anew and victim in await registry(run)

    await run.wait_until(new_incarnation, "the new incarnation registered", 30)
    run.mark(f"{victim} registered again")
    result = await run.finish("same-id-restart", options_of(opts, workers, count, op_s), 90)
    final = await run.operation(op_id)
    listed = await registry(run)
    registrations = [
        e
        for e in run.backend_events("worker_registered")
        if e["worker_id"] == victim and e["new_instance"]
    ]
    killed_finished = [
        r
        for r in run.executions()
        if r["operation_id"] == op_id
        and r["attempt"] == killed_attempt
        and r["event"] == "finished"
    ]
    result.figures |= {
        "victim": victim,
        "killed_attempt": killed_attempt,
        "final_attempt": final.attempt,
        "registry": listed,
    }
    result.checks |= {
        "all_completed": result.ledger.outcomes.get("completed", 0) == count,
        "one_entry_per_worker": listed == sorted(names),
        "new_incarnation_registered": len(registrations) == 2,  # at start, after the restart
        "killed_attempt_superseded": final.status == "completed"
        and final.attempt > killed_attempt
        and not killed_finished,
    }
    return result


async def registration_storm(run: Run, opts: Options) -> Result:
    """Start many workers at once (12 by default) so they register together, give them work,
    then SIGKILL the backend and restart it on the same database: every worker registers
    again, the registry lists exactly the live workers once each, and operations submitted
    after the restart complete (with those that ran across it)."""
    workers, count = opts.workers or 12, opts.operations or 24
    op_s = opts.op_seconds or 1.0
    began = time.monotonic()
    names = await fleet(run, workers)
    registered_s = time.monotonic() - began
    await run.submit_all(workers, sleep_params(op_s))  # running when the backend dies
    await run.restart_backend()
    back = time.monotonic()

    async def all_registered_again() -> bool:
        registered = {e["worker_id"] for e in registrations_since_restart(run)}
        return registered >= set(names)

    await run.wait_until(all_registered_again, "every worker registered again", 60)
    re_registered_s = time.monotonic() - back
    run.mark("every worker registered again")
    listed = await registry(run)
    await run.submit_all(count, sleep_params(op_s))
    total = workers + count
    result = await run.finish(
        "registration-storm", options_of(opts, workers, total, op_s), drain_s=120
    )
    result.figures |= {
        "registered_in_s": round(registered_s, 2),
        "registered_again_in_s": round(re_registered_s, 2),
        "registrations_after_restart": len(registrations_since_restart(run)),
    }
    result.checks |= {
        "all_completed": result.ledger.outcomes.get("completed", 0) == total,
        "registry_exactly_the_live_workers": listed == sorted(names)
        and await registry(run) == sorted(names),
    }
    return result


async def registry(run: Run) -> list[str]:
    """The worker ids the backend lists, sorted (an id listed twice shows twice)."""
    return sorted(w.worker_id for w in (await run.client.workers()).items)


def registrations_since_restart(run: Run) -> list[dict[str, object]]:
    """The backend's registrations logged since its latest start (its log spans restarts)."""
    events = run.backend_events("worker_registered")
    starts = run.backend_events("backend_started")
    since = starts[-1]["timestamp"] if starts else ""
    return [e for e in events if e["timestamp"] > since]


SCENARIOS = {
    "same-id-restart": Scenario(same_id_restart),
    "registration-storm": Scenario(registration_storm),
}
