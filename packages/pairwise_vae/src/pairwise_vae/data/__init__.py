"""Conformation data: the molecule's records, dataset files, MD trajectories, splits and structure files."""
