"""``python -m pairwise_vae`` runs the training command (same as ``pairwise-vae-train``)."""

from pairwise_vae.training.train import main

if __name__ == "__main__":
    main()
