"""Building blocks of DGD-Fusion, one module per paper concept."""
