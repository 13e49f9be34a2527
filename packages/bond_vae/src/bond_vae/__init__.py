"""bond_vae: a ViSNet -> EGNN variational autoencoder of molecular conformations trained on
covalent bond lengths.

Main classes: :class:`~bond_vae.model.encoder.ViSNetEncoder`, :class:`~bond_vae.model.decoder.EGNNDecoder`
and :class:`~bond_vae.model.vae.MolecularVAE`. Train with ``bond-vae-train`` (``python -m bond_vae``).
"""

__version__ = "0.3.0"
