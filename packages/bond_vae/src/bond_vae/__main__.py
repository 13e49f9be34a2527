"""``python -m bond_vae`` runs the training command (same as ``bond-vae-train``)."""

from bond_vae.training.train import main

if __name__ == "__main__":
    main()
