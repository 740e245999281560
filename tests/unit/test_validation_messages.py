"""Validation errors read as one line: where, then what, our own validators' prefix dropped."""

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from workfleet.validation import problems


class Sample(BaseModel):
    a: int
    b: int

    @field_validator("b")
    @classmethod
    def _small(cls, value: int) -> int:
        if value > 9:
            raise ValueError("b must be below 10")
        return value


def refusal(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Sample.model_validate(data)
    return caught.value


def test_each_problem_names_its_field_and_drops_pydantics_value_error_prefix() -> None:
    assert problems(refusal({"a": "x", "b": 12})) == (
        "a: Input should be a valid integer, unable to parse string as an integer; "
        "b: b must be below 10"
    )


def test_an_error_about_the_whole_input_is_named_as_asked() -> None:
    assert problems(refusal([1]), whole="params").startswith("params: Input should be")


def test_a_limit_says_how_many_more_there_are() -> None:
    assert problems(refusal({}), limit=1) == "a: Field required (and 1 more)"
