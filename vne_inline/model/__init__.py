"""The VNE generator, discriminator and losses (needs the `train` extra: torch)."""
