"""The `demakeup` command line (Typer). Thin: parses options, then calls demakeup_dist."""
