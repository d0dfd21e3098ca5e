"""The UDIP encoder: a 3D convolutional autoencoder whose bottleneck gives the UDIPs."""
