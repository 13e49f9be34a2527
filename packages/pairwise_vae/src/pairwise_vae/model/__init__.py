"""The network: ViSNet encoder, EGNN decoder, their blocks and graphs, the VAE, its losses and parity rule."""
