"""Command line of DGD-Fusion: ``python -m fusion_core COMMAND``, nine commands.

    fuse       fuse one pair, or every pair of a folder (batched, torchrun), into PNG, 16-bit TIFF or DICOM
    train      train stage 1 (the UNet), stage 2 (the fusion head) or both
    evaluate   fuse a folder of pairs with several methods and tabulate the metrics
    split      hold out every N-th pair (or case) of a folder as a test split
    bench      latency and peak memory of fusion and metrics
    ablation   train and evaluate the paper's Table 4 variants under one budget
    compare    the paper's comparison table: metric means and the reference's lead in %
    curves     plot the validation rank of training runs against training minutes
    gates      how much the GFS gates of a checkpoint select over a folder of pairs

Thin: parse, build, call the library. Training flags are generated from ``TrainConfig``'s fields.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
