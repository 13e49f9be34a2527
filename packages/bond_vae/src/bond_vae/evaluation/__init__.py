"""Evaluation: the command, structural metrics, ensemble comparison, the quality bar and figures."""
