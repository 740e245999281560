"""The `workfleet` command."""

import typer

from workfleet.cli import admin, audit, certs, data, loadtest, operations, servers, simulate, up

app = typer.Typer(
    name="workfleet",
    help="Run long operations on a fleet of self-registering workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(servers.backend)
app.command()(servers.worker)
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


def main() -> None:
    app()
