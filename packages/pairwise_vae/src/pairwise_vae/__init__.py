"""pairwise_vae: a ViSNet -> EGNN variational autoencoder of molecular conformations trained on
all interatomic distances.

Main classes: :class:`~pairwise_vae.encoder.ViSNetEncoderMSE`, :class:`~pairwise_vae.decoder.EGNNDecoderMSE`
and :class:`~pairwise_vae.model.MolecularVAEMSE`. Train with ``pairwise-vae-train`` (``python -m pairwise_vae``).
"""

__version__ = "0.2.0"
