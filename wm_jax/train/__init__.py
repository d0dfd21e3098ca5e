"""Training the UDIP autoencoder: data-parallel steps over a device mesh."""
