"""Inputs from the outside that must be refused or tamed before they can do harm."""

import pytest
from pydantic import ValidationError

from workfleet.operations.backtest.params import BacktestParams
from workfleet.protocol import WorkerRegistration
from workfleet.worker.runner import clean_progress

REGISTRATION = {
    "worker_id": "w1",
    "worker_type": "backtesting",
    "operation_types": [],
    "instance_id": "i",
}


@pytest.mark.parametrize("url", ["http://h:abc", "http://[::1", "http://:5003", "ftp://h"])
def test_a_worker_cannot_register_an_address_the_backend_could_not_call(url: str) -> None:
    with pytest.raises(ValidationError):
        WorkerRegistration.model_validate({**REGISTRATION, "endpoint_url": url})


def test_a_worker_registers_an_ordinary_address() -> None:
    registration = WorkerRegistration.model_validate(
        {**REGISTRATION, "endpoint_url": "http://worker-7.lan:5003"}
    )
    assert registration.endpoint_url == "http://worker-7.lan:5003"


@pytest.mark.parametrize("symbol", ["../../metrics?", "a/b", "", " BTC", ".hidden"])
def test_a_symbol_that_could_steer_a_url_or_a_path_is_refused(symbol: str) -> None:
    with pytest.raises(ValidationError):
        BacktestParams.model_validate(
            {"symbol": symbol, "timeframe": "1h", "strategy": "sma_crossover"}
        )


@pytest.mark.parametrize(
    "reported", [{"percentage": 150}, {"percentage": float("nan")}, {"message": object()}]
)
def test_progress_an_operation_should_not_have_reported_is_dropped(reported: dict) -> None:
    assert clean_progress(reported) is None


def test_good_progress_passes_with_its_own_fields() -> None:
    assert clean_progress({"percentage": 50, "epoch": 3, "loss": 0.5}) == {
        "percentage": 50.0,
        "epoch": 3,
        "loss": 0.5,
    }
