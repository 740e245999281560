"""Load scenarios: how much the fleet does and how fast, with no faults."""

import time

from workfleet.harness.run import Options, Result, Run, Scenario, fleet, options_of, sleep_params


async def baseline(run: Run, opts: Options) -> Result:
    """Throughput with N one-slot workers and the queue kept full: ops/hour and efficiency
    against the ideal (every slot busy all the time: ops x duration / workers)."""
    workers, count = opts.workers or 10, opts.operations or 200
    op_s = opts.op_seconds or 1.0
    await fleet(run, workers)
    run.mark(f"submit {count} x sleep {op_s:g} s")
    started = time.time()
    await run.submit_all(count, sleep_params(op_s))
    submit_s = time.time() - started
    result = await run.finish(
        "baseline", options_of(opts, workers, count, op_s), drain_s=count * op_s
    )
    makespan = result.figures["ops"]["makespan_s"]
    ideal = count * op_s / workers
    result.figures |= {
        "submit_s": round(submit_s, 3),
        "ideal_s": round(ideal, 3),
        "efficiency": round(ideal / makespan, 3) if makespan else 0.0,
        "ops_per_hour": round(count / makespan * 3600) if makespan else 0,
    }
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    return result


SCENARIOS = {"baseline": Scenario(baseline)}
