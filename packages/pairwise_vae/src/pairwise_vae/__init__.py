"""pairwise_vae: a ViSNet -> EGNN variational autoencoder of molecular conformations trained on
all interatomic distances.

Main classes: :class:`~pairwise_vae.model.encoder.ViSNetEncoderMSE`, :class:`~pairwise_vae.model.decoder.EGNNDecoderMSE`
and :class:`~pairwise_vae.model.vae.MolecularVAEMSE`. Train with ``pairwise-vae-train`` (``python -m pairwise_vae``).
"""

__version__ = "0.3.0"
