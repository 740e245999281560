"""The whole `workfleet` command line, every command loaded (tests drive it in-process)."""

from workfleet.cli.commands import command_line

app = command_line()
