"""pydantic's validation errors as one line a person reads: `where: what; where: what`."""

from pydantic import ValidationError
from pydantic_core import ErrorDetails


def problem(error: ErrorDetails, whole: str = "") -> str:
    """`a.b: message`; `whole` names the location of an error about the whole input."""
    where = ".".join(str(part) for part in error["loc"]) or whole
    message = error["msg"].removeprefix("Value error, ")  # our own validators' messages
    return f"{where}: {message}" if where else message


def problems(exc: ValidationError, whole: str = "", limit: int | None = None) -> str:
    """Every problem (or the first `limit`, saying how many more), joined by '; '."""
    errors = exc.errors()
    shown = "; ".join(problem(error, whole) for error in errors[:limit])
    hidden = len(errors) - len(errors[:limit])
    return f"{shown} (and {hidden} more)" if hidden else shown
