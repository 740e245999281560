"""Every `workfleet` command, by name, and how to build the command line from some of them.

A process imports only the command it runs (cli/entry.py): `workfleet worker` then loads the
worker's side alone, and `workfleet certs list` no backend, load harness or numpy, which
halves their start-up (about 0.6 s of CPU instead of 1.05; a fleet, or a test run, starts
hundreds of processes)."""

import importlib
from collections.abc import Iterable

import typer

# name -> (module, attribute): a command function, or a Typer group of subcommands
COMMANDS: dict[str, tuple[str, str]] = {
    "backend": ("workfleet.cli.backend_server", "backend"),
    "worker": ("workfleet.cli.worker_server", "worker"),
    "up": ("workfleet.cli.up", "up"),
    "simulate": ("workfleet.cli.simulate", "simulate"),
    "loadtest": ("workfleet.cli.loadtest", "loadtest"),
    "submit": ("workfleet.cli.operations", "submit_app"),
    "ops": ("workfleet.cli.operations", "ops_app"),
    "workers": ("workfleet.cli.admin", "workers_app"),
    "keys": ("workfleet.cli.admin", "keys_app"),
    "data": ("workfleet.cli.data", "data_app"),
    "certs": ("workfleet.cli.certs", "certs_app"),
    "audit": ("workfleet.cli.audit", "audit_app"),
}


def command_line(names: Iterable[str] = COMMANDS) -> typer.Typer:
    app = typer.Typer(
        name="workfleet",
        help="Run long operations on a fleet of self-registering workers.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(lambda: None)  # a group even with one command: `workfleet NAME ...` parses
    for name in names:
        module, attribute = COMMANDS[name]
        command = getattr(importlib.import_module(module), attribute)
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=name)
        else:
            app.command(name)(command)
    return app
