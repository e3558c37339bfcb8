"""demakeup_dist: the library behind the `demakeup` command (data, models, training, launch)."""

__version__ = "0.1.0"
