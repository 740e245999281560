"""Shared CLI plumbing: one-line errors, settings from the flags actually given, the client."""

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from workfleet.client import ApiError, BackendUnreachable, Client
from workfleet.security.tls import client_context
from workfleet.settings import ClientSettings, ConfigurationError, TlsPaths
from workfleet.validation import problems

T = TypeVar("T")
out = Console()
err = Console(stderr=True)
ADMIN_KEY_FILE = "admin.key"
BACKEND_URL_FILE = "backend.url"  # where `workfleet up` serves, for the local CLI


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def given(**flags: Any) -> dict[str, Any]:
    """Only the flags the user set, so environment variables still apply to the rest."""
    return {name: value for name, value in flags.items() if value is not None}


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command body; every expected failure becomes one clear line, never a traceback."""
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except ApiError as exc:
        hint = " (check --api-key / WORKFLEET_API_KEY)" if exc.status in (401, 403) else ""
        fail(f"{exc.detail} (HTTP {exc.status}){hint}")
    except BackendUnreachable as exc:
        fail(f"{exc} (is the backend running? see --backend-url / WORKFLEET_BACKEND_URL)")
    except (ConfigurationError, ValidationError) as exc:
        fail(_settings_message(exc), code=2)


def _settings_message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return problems(exc)
    return str(exc)


def settings_or_exit(factory: Callable[[], T]) -> T:
    try:
        return factory()
    except (ConfigurationError, ValidationError) as exc:
        fail(_settings_message(exc), code=2)


def client_settings(
    backend_url: str | None, api_key: str | None, data_dir: Path | None
) -> ClientSettings:
    settings = settings_or_exit(
        lambda: ClientSettings(**given(backend_url=backend_url, api_key=api_key, data_dir=data_dir))
    )
    local_url = settings.data_dir / BACKEND_URL_FILE
    if "backend_url" not in settings.model_fields_set and local_url.is_file():
        # a local `workfleet up` says where it serves (https in its default mtls mode)
        settings = settings.model_copy(update={"backend_url": local_url.read_text().strip()})
    if settings.api_key is None:  # a local `workfleet up` leaves its admin key in the data dir
        local_key = settings.data_dir / ADMIN_KEY_FILE
        if local_key.is_file():
            return settings.model_copy(update={"api_key": local_key.read_text().strip()})
    return settings


def client_from(settings: ClientSettings) -> Client:
    key = settings.api_key.get_secret_value() if settings.api_key else None
    tls = None
    if settings.backend_url.startswith("https://"):  # our CA only, never the system's roots
        identity = None
        if settings.tls_cert is not None and settings.tls_key is not None:
            identity = TlsPaths(settings.tls_cert, settings.tls_key, settings.resolved_tls_ca())
        tls = settings_or_exit(lambda: client_context(settings.resolved_tls_ca(), identity))
    return Client(settings.backend_url, api_key=key, tls=tls)


def with_client(func: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Decorate a command body `async def body(client, **kwargs)`."""

    @functools.wraps(func)
    def wrapper(
        backend_url: str | None, api_key: str | None, data_dir: Path | None, **kwargs: Any
    ) -> T:
        async def body() -> T:
            async with client_from(client_settings(backend_url, api_key, data_dir)) as client:
                return await func(client, **kwargs)

        return run(body())

    return wrapper


BackendUrl = typer.Option(None, "--backend-url", help="Backend URL [env WORKFLEET_BACKEND_URL]")
ApiKey = typer.Option(None, "--api-key", help="API key [env WORKFLEET_API_KEY]", show_default=False)
DataDir = typer.Option(None, "--data-dir", help="Data directory [env WORKFLEET_DATA_DIR]")
