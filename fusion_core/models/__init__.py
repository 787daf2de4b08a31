"""Whole networks of DGD-Fusion: the denoising UNet and the cross-layer attention fusion head."""
