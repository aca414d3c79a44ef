"""Training data preparation and GAN training (needs the `train` extra for training)."""
