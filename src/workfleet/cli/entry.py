"""The `workfleet` script and `python -m workfleet`: loads only the command asked for (all of
them for `--help`, or for a name that is not a command, so its error lists them)."""

import sys

from workfleet.cli.commands import COMMANDS, command_line


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    command_line([name] if name in COMMANDS else COMMANDS)()
