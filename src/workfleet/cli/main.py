"""The `workfleet` command, every subcommand (cli/entry.py starts it, or a server alone)."""

import typer

from workfleet.cli import (
    admin,
    audit,
    backend_server,
    certs,
    data,
    loadtest,
    operations,
    simulate,
    up,
    worker_server,
)

app = typer.Typer(
    name="workfleet",
    help="Run long operations on a fleet of self-registering workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(backend_server.backend)
app.command()(worker_server.worker)
app.command()(up.up)
app.command()(simulate.simulate)
app.command()(loadtest.loadtest)
app.add_typer(operations.submit_app, name="submit")
app.add_typer(operations.ops_app, name="ops")
app.add_typer(admin.workers_app, name="workers")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(data.data_app, name="data")
app.add_typer(certs.certs_app, name="certs")
app.add_typer(audit.audit_app, name="audit")
