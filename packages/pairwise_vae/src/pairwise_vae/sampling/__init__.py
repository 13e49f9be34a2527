"""Sampling: the command, checkpoint inference, the latent prior, torsion noise and relaxation."""
