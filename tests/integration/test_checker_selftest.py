"""The ledger checker's self-test: for each deliberately broken backend (harness/broken.py,
`workfleet loadtest ... --break-backend MODE`), the smallest scenario that exposes the bug
must fail, and under the invariant the mode names (`catches`). That the same scenarios pass on
the real backend is tested in test_loadtest.py.

Two run by default (the stale result accepted, the operation made final twice); the others are
behind the `slow` marker (`./scripts/test -m slow tests/integration/test_checker_selftest.py`).
"""

import json

import pytest
from test_loadtest import loadtest

from workfleet.harness import broken

# a few operations on two workers: every mode's bug strikes every third event (broken.EVERY)
SMALL_BASELINE = ("baseline", "--workers", "2", "--operations", "6", "--op-seconds", "0.2")
# the paused worker's late result is what fencing must refuse
SCENARIO = {"accept-stale": ("frozen",)}
DEFAULT_TIER = {"accept-stale", "redispatch-finished"}


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(mode, marks=() if mode in DEFAULT_TIER else pytest.mark.slow)
        for mode in broken.MODES
    ],
)
def test_the_checker_fails_a_deliberately_broken_backend(mode: str) -> None:
    code, report, log = loadtest(*SCENARIO.get(mode, SMALL_BASELINE), "--break-backend", mode)
    ledger = report["ledger"]
    expected = broken.MODES[mode].catches
    assert code == 1 and not report["passed"], f"{json.dumps(report, indent=1)}\n{log[-3000:]}"
    assert not ledger["valid"] and ledger[expected] > 0, ledger
    assert report["options"]["break_backend"] == mode
