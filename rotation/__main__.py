"""`python -m rotation` runs the `rotation` command."""

from .cli import main

main()
