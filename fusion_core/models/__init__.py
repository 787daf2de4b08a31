"""Whole networks of DGD-Fusion: the denoising UNet, the cross-layer attention fusion head, and DGDFusionModel
holding both (dgd_fusion.py)."""
