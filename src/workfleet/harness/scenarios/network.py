"""Faults only real network namespaces make (`--network netns`, root; harness/netns.py):
packets dropped at random on a worker's link, which TCP retransmits, so calls are slow and
uneven rather than cut. The proxies cannot do this: they relay a stream the kernel has
already delivered whole."""

import asyncio
import random
from collections import Counter

from workfleet.harness.run import Options, Result, Run, Scenario, fleet, keep_fed, options_of

LOSS_S = 20.0  # packet-loss: how long the links stay lossy
# each false mark may cost the operation on that worker an attempt, and one operation may land
# on lossy workers again: a budget above the 3 by default, so a run at 30 % reports its
# retries (2 losses measured) instead of failing an unlucky operation on a third
MAX_LOSSES = 6


async def packet_loss(run: Run, opts: Options) -> Result:
    """Drop --loss-percent % of the packets (10 by default), each way, on the links of half
    the workers (3 of 6 by default) for LOSS_S while operations keep coming (about two per
    worker queued or running), then heal: every operation completes once.
    Reported, not checked (how many lost health checks make a mark is the threshold policy's
    choice): the false unavailable marks, every worker being alive throughout, and the
    retries (ops.max_attempt, ops.retried)."""
    workers = opts.workers or 6
    op_s = opts.op_seconds or 1.0
    names = await fleet(run, workers)
    lossy = sorted(random.Random(opts.seed).sample(names, max(1, workers // 2)))
    stop = asyncio.Event()
    feeding = run.in_background(keep_fed(run, 2 * workers, op_s, stop))
    for name in lossy:
        run.lose_packets(name, opts.loss_percent)
    await asyncio.sleep(LOSS_S)
    seen = dropped = 0
    for name in lossy:
        counts = run.packets_lost(name)
        seen, dropped = seen + counts[0], dropped + counts[1]
        run.lose_packets(name, 0)
    stop.set()
    await feeding
    options = options_of(opts, workers, None, op_s) | {
        "loss_percent": opts.loss_percent,
        "loss_s": LOSS_S,
    }
    result = await run.finish("packet-loss", options, drain_s=90)
    marked = Counter(
        e["worker_id"]
        for e in run.backend_events("worker_status_changed")
        if e["after"] == "temporarily_unavailable"
    )
    result.figures |= {
        "lossy": lossy,
        # the loss the links really had (each packet draws apart, so it varies around the %)
        "packets_dropped": {
            "seen": seen,
            "dropped": dropped,
            "percent": round(100 * dropped / seen, 1) if seen else 0.0,
        },
        "false_unavailable": sum(marked.values()),
        "false_unavailable_by_worker": dict(sorted(marked.items())),
        "removed": len(run.backend_events("worker_removed")),
    }
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == len(
        run.history.acknowledged()
    )
    return result


SCENARIOS = {
    "packet-loss": Scenario(
        packet_loss, lambda _: {"WORKFLEET_MAX_LOSSES": str(MAX_LOSSES)}, netns=True, loopback=False
    )
}
