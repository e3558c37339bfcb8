"""Training: config, recipe, loop, checkpoints, tracking, evaluation."""
