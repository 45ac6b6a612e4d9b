"""`python -m freeavatar ...`: the same CLI as the `freeavatar` command."""

from freeavatar.cli import main

main()
