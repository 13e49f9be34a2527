"""Training: the command, its settings, the loop, schedules, validation, checkpoints, data parallelism, run log."""
