"""`training` parameters: defaults, and bad values refused with the reason."""

import pytest
from pydantic import ValidationError

from workfleet.operations.training.params import TrainingParams


def test_defaults_fill_in_what_is_not_given() -> None:
    params = TrainingParams(symbol="SYN", timeframe="1h")
    assert params.device == "auto" and params.epochs == 20 and params.hidden_sizes == [32, 16]
    assert params.validation_fraction == params.test_fraction == 0.15


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("device", "tpu", "auto"),
        ("epochs", 0, "greater than or equal to 1"),
        ("learning_rate", 0, "greater than 0"),
        ("hidden_sizes", [0], "greater than or equal to 1"),
        ("batch_size", -1, "greater than or equal to 1"),
        ("timeframe", "2h", "1m"),
        ("unknown", 1, "Extra inputs"),
    ],
)
def test_bad_values_are_refused_naming_what_is_allowed(
    field: str, value: object, says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        TrainingParams.model_validate({"symbol": "SYN", "timeframe": "1h", field: value})


def test_held_out_fractions_must_leave_data_to_train_on() -> None:
    with pytest.raises(ValidationError, match="at least 10% of the samples"):
        TrainingParams(symbol="S", timeframe="1h", validation_fraction=0.5, test_fraction=0.45)
