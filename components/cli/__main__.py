"""`python -m components.cli` runs the `retro` command line."""

from components.cli.app import main

main()
