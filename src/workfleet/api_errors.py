"""Domain errors -> HTTP status, in one place, for the backend and the worker apps."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from workfleet.domain import errors

STATUS_OF: list[tuple[type[errors.WorkfleetError], int]] = [
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.InvalidRequest, 422),
    (errors.QueueFull, 429),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.Unavailable, 503),
    (errors.Throttled, 429),
]


def map_domain_errors(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        status = next(code for kind, code in STATUS_OF if isinstance(exc, kind))
        headers: dict[str, str] = {}
        if isinstance(exc, errors.Unauthenticated):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, errors.QueueFull | errors.Throttled):
            headers["Retry-After"] = str(exc.retry_after_s)
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    async def invalid_body(request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's default echoes each rejected input back, secrets included (a bootstrap
        # token, a key): say where and what is wrong, never the value.
        assert isinstance(exc, RequestValidationError)
        problems = [
            {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
            for error in exc.errors()
        ]
        return JSONResponse({"detail": problems}, status_code=422)

    for kind, _ in STATUS_OF:
        app.add_exception_handler(kind, handle)
    app.add_exception_handler(RequestValidationError, invalid_body)
