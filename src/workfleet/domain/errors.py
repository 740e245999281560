"""Domain errors, mapped to HTTP status codes in one place (backend/app.py).

WorkfleetError
 ├─ NotFound            404  unknown operation, worker or key
 ├─ Conflict            409  the request contradicts current state
 │   ├─ InvalidTransition    e.g. cancelling a finished operation
 │   └─ StaleLease           a report quoting a lease that is no longer current
 ├─ InvalidRequest      422  well-formed but unacceptable (unknown type, bad params)
 ├─ QueueFull           429  bounded queue is full; carries retry_after_s
 ├─ Unauthenticated     401  missing or invalid credential
 └─ Forbidden           403  authenticated but not allowed
"""


class WorkfleetError(Exception):
    """Base of every error the domain and the use cases raise on purpose."""


class NotFound(WorkfleetError):
    pass


class Conflict(WorkfleetError):
    pass


class InvalidTransition(Conflict):
    def __init__(self, subject: str, current: str, target: str) -> None:
        super().__init__(f"{subject} is {current}; it cannot become {target}")
        self.current = current
        self.target = target


class StaleLease(Conflict):
    def __init__(self, operation_id: str) -> None:
        super().__init__(f"the lease quoted for operation {operation_id} is not current")


class InvalidRequest(WorkfleetError):
    pass


class QueueFull(WorkfleetError):
    def __init__(self, pending: int, retry_after_s: int, *, owner: str | None = None) -> None:
        if owner is None:
            message = f"the queue is full ({pending} pending operations); retry later"
        else:  # one submitter's share: the others still get in
            message = f"{owner} has {pending} unfinished operations, its limit; retry later"
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unauthenticated(WorkfleetError):
    pass


class Forbidden(WorkfleetError):
    pass


class Unavailable(WorkfleetError):
    """This backend cannot do that now or at all (it holds no CA, say); another could."""


class Throttled(WorkfleetError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__("too many failed attempts from this address; retry later")
        self.retry_after_s = retry_after_s
