"""What the command line shows: progress (bars on a terminal, lines in CI logs) and the remote commands."""
