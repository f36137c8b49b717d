"""The `flopwatch` command line (entry point: flopwatch.cli.main:main)."""
