"""Files an operation produced (an equity curve, a trade list, a model), uploaded by its
worker under the attempt's lease and kept content-addressed by the backend."""

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from workfleet.domain.errors import InvalidRequest

NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# ctx.save_checkpoint keeps the operation's state as this artifact; the latest one wins
CHECKPOINT_ARTIFACT: Final = "checkpoint.pt"


@dataclass(frozen=True, slots=True)
class Artifact:
    operation_id: str
    name: str
    attempt: int
    sha256: str
    size_bytes: int
    created_at: datetime


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidRequest(
            f"artifact name {name!r}: 1-128 letters, digits, '.', '_' or '-', not starting with "
            "a separator"
        )
    return name
