"""Job launch: Slurm script rendering, submission, status."""
