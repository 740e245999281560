"""The deliberately broken backends of the checker's self-test (harness/broken.py): each mode
names an invariant of the ledger, and a mode nobody knows stops the backend and the loadtest
before anything starts, in one line."""

import pytest
import typer
from structlog.testing import capture_logs
from typer.testing import CliRunner

from workfleet.backend.orchestrator import Orchestrator
from workfleet.cli import backend_server
from workfleet.cli.main import app
from workfleet.harness import broken
from workfleet.harness.ledger import INVARIANTS

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("mode", broken.MODES)
def test_each_mode_is_an_orchestrator_that_names_the_invariant_it_breaks(mode: str) -> None:
    chosen = broken.broken_orchestrator(mode)
    assert issubclass(chosen, Orchestrator) and chosen is not Orchestrator
    assert chosen.catches in (*INVARIANTS, "metrics_mismatch")
    assert chosen.__doc__


def test_every_invariant_of_the_checker_has_a_mode() -> None:
    covered = {mode.catches for mode in broken.MODES.values()}
    assert covered == {*INVARIANTS, "metrics_mismatch"}


def test_an_unknown_mode_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown WORKFLEET_TEST_BREAK mode 'skip-fsync'") as err:
        broken.broken_orchestrator("skip-fsync")
    assert all(mode in str(err.value) for mode in broken.MODES)


def test_the_backend_takes_a_broken_orchestrator_only_when_asked_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(broken.ENV, raising=False)
    assert backend_server._test_break() is Orchestrator
    monkeypatch.setenv(broken.ENV, "miscount")
    with capture_logs() as logs:
        assert backend_server._test_break() is broken.Miscount
    assert [(e["event"], e["log_level"], e["mode"]) for e in logs] == [
        ("backend_deliberately_broken", "warning", "miscount")
    ]
    monkeypatch.setenv(broken.ENV, "skip-fsync")
    with pytest.raises(typer.Exit) as stopped:
        backend_server._test_break()
    assert stopped.value.exit_code == 2


def test_loadtest_refuses_an_unknown_break_mode_before_starting_anything() -> None:
    done = CliRunner().invoke(
        app, ["loadtest", "baseline", "--break-backend", "skip-fsync"], env={"COLUMNS": "200"}
    )
    assert done.exit_code == 2
    assert "unknown --break-backend 'skip-fsync'" in done.output
