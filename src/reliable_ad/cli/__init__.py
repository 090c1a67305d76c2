"""The `reliable-ad` command line: one command, a subcommand per part of the method."""
