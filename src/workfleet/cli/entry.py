"""The `workfleet` script and `python -m workfleet`. A server process takes a path of its own:
`workfleet worker` imports the worker's side alone, not every command's (the backend, the load
harness, numpy for `simulate`): it starts on about 0.6 s of CPU instead of 1, which counts when
a fleet, or a test run, starts hundreds of them."""

import sys

import typer


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "worker":
        from workfleet.cli.worker_server import worker

        _alone(command, worker)()
    elif command == "backend":
        from workfleet.cli.backend_server import backend

        _alone(command, backend)()
    else:
        from workfleet.cli.main import app

        app()


def _alone(name: str, command: typer.models.CommandFunctionType) -> typer.Typer:
    """A group holding the one command, so `workfleet NAME --options` parses (and its --help
    reads) as in the full command."""
    app = typer.Typer(name="workfleet", pretty_exceptions_enable=False, add_completion=False)
    app.callback()(lambda: None)
    app.command(name)(command)
    return app
