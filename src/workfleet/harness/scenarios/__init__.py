"""Load and fault scenarios on real processes (`workfleet loadtest NAME`): each starts a
backend and workers (harness.cluster), submits diagnostic operations while recording the
client's history, hurts the fleet on a schedule, drains, and reconciles the client's
history, every worker's execution log and the backend's records (harness.ledger).

Each module registers its scenarios in its own `SCENARIOS`; this one gathers them."""

from collections.abc import Callable
from pathlib import Path

from workfleet.harness import broken
from workfleet.harness.cluster import FAST, Cluster
from workfleet.harness.run import Options, Result, Run, Scenario
from workfleet.harness.scenarios import faults, lifecycle, links, load, network

SCENARIOS: dict[str, Scenario] = (
    load.SCENARIOS | faults.SCENARIOS | links.SCENARIOS | lifecycle.SCENARIOS | network.SCENARIOS
)


async def run_scenario(
    name: str, opts: Options, root: Path, say: Callable[[str], None] = lambda _: None
) -> Result:
    scenario = SCENARIOS[name]
    env = scenario.backend_env(opts)
    if opts.max_losses is not None:
        env["WORKFLEET_MAX_LOSSES"] = str(opts.max_losses)
    if opts.break_backend is not None:
        env[broken.ENV] = opts.break_backend
    cluster = Cluster(root, timing=FAST, backend_env=env, network=opts.network)
    try:  # a failed start must not leave the netns bridge behind either
        await cluster.start_backend()
        run = Run(cluster, say)
        try:
            await run.start_sampling()
            result = await scenario.play(run, opts)
        finally:
            await run.stop_background()
            await run.client.close()
        result.options["max_losses"] = int(env.get("WORKFLEET_MAX_LOSSES", 3))
        result.options["break_backend"] = opts.break_backend
        result.options["network"] = opts.network
        return result
    finally:
        await cluster.stop()
