"""The command layer of `poincare-parity`: one module per command, each with `main(args) -> int`.

A command maps its parsed arguments (`parity.cli`) to library calls, prints what a person reads,
writes JSON through the one writer (`parity.commands.output.write_json`) and returns the exit status
(`parity.errors`); errors a user can fix are raised as `parity.errors.UsageError` and printed by
`parity.cli.main` as one line. Nothing below this package prints or writes files for a command.
"""
