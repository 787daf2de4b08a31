"""The app's prose: the page's description, the About tab, the tabs' introductions and the controls' labels.

Plain strings (no gradio), so the words can be read and changed in one place.
"""

from __future__ import annotations

from fusion_app import limits
from fusion_core import TrainConfig

FROM_SCRATCH = "random weights (preset below)"
WINDOWS = {  # UI label -> read_image(window=...)
    "stored window (full range when none)": None,
    "full range": "full",
    "brain (W 80, L 40)": "brain",
    "soft tissue (W 350, L 50)": "soft_tissue",
    "bone (W 2000, L 500)": "bone",
    "lung (W 1500, L -600)": "lung",
}
DEFAULT_WINDOW = next(iter(WINDOWS))

DESCRIPTION = f"""\
# DGD-Fusion: multimodal image fusion with a dynamic-gating diffusion network

Fuse an **infrared + visible** pair or an **MRI + CT / PET / SPECT** pair, compare the result with classical
fusion methods on the paper's metrics, and look inside the network: the expert weights of its dynamic feature
extractors, the gates of its gated feature selection, its global-local attention maps and the weight map
that says where the result comes from A and where from B. Method: Di, Huo, Wang,
Liu and Lian, *J. Harbin Inst. Technol.* 2026, DOI [10.11918/202507016](https://doi.org/10.11918/202507016).

**A research tool, not a medical device: never use it for diagnosis, and do not upload real patient data to a
public Space.**

One request runs at a time; the others wait their turn, up to {limits.QUEUE_SIZE}, each shown its place in the
queue (a full queue says the app is busy: try again in a minute). A fusion may take up to {limits.FUSE_SECONDS} s and
an evaluation up to {limits.EVALUATE_SECONDS} s; a longer one is stopped with a message. Your outputs are deleted
when you close the page.
"""

ABOUT = """\
## The method

DGD-Fusion (Di, Huo, Wang, Liu, Lian, "Dynamic gating diffusion denoising and cross-layer attention-based
multimodal image fusion network", *Journal of Harbin Institute of Technology* 2026,
DOI [10.11918/202507016](https://doi.org/10.11918/202507016)) fuses two registered images in two parts:

1. a **denoising diffusion model** learns the joint distribution of the stacked pair. Its noise predictor is a
   UNet built from **dynamic feature extractors** (DFE: each layer mixes several expert kernels with weights
   chosen per image and per noise level) and **gated feature selection** modules (GFS: a spatial-and-channel
   gate that keeps the informative features);
2. a **cross-layer attention fusion head** reads the UNet's multi-scale features at a few small noise levels,
   together with the two sources, through R-Transformer blocks and **global-local attention** (GLSA), and
   outputs the fused luminance.

Fusion runs on luminance: the colour of the visible, PET or SPECT image is kept exactly (YCbCr, BT.601).
The metric table uses the paper's seven metrics (EN, MI, SSIM, PSNR, SF, Q<sup>AB/F</sup>, CC) and four more
that the field reports (SD, AG, SCD, VIF); the convention is named above every table.

## Data

- **Infrared + visible:** MSRS (L. Tang et al., PIAFusion, *Information Fusion* 2022; SeAFusion, *Information
  Fusion* 2022), built from MFNet (Q. Ha et al., IROS 2017).
- **Medical:** The Whole Brain Atlas (K. A. Johnson and J. A. Becker, Harvard Medical School).

The bundled example pairs come from the test splits, so the bundled checkpoints never trained on them
(`assets/examples/README.md`).

## Use

This is a **research tool. It is not a medical device and must not be used for diagnosis.** Do not upload
real patient data to a public Space: anything uploaded there is processed on a shared server. DICOM files are
read locally and only technical attributes (modality, size, window, spacing) are shown; exported DICOM files
are new Secondary Capture objects that carry no identifier of the inputs.
"""

EVALUATE_INTRO = """\
Fuse every pair of a zip with the network and the four classical baselines and score them. The zip holds two \
folders with the same file names: `ir` + `vi`, `MRI` + `CT|PET|SPECT` or `A` + `B`; folders `fused/NAME/` beside \
them, with another method's fused image of each pair (named like the pair, the pair's size), are scored as method \
NAME. Without a zip, the bundled examples of the task are used."""

TRAIN_INTRO = (
    "Train or fine-tune the network on your own pairs (a zip as in the Evaluate tab, at most "
    f"{limits.MAX_TRAIN_PAIRS} pairs; without one, the bundled examples of the task). Stage 1 trains the "
    "diffusion UNet, stage 2 the fusion head, each at most "
    f"{limits.MAX_TRAIN_STEPS:,} steps. The `tiny` preset makes a quick trial; real training wants a GPU "
    "and the command line (`python -m fusion_core train`). One run at a time. Every run here uses "
    f"the training seed `train.seed` = {TrainConfig.seed} (`TrainConfig.seed`; `train --seed` on the "
    "command line): random initial weights, crops, flips and noise are drawn from it, so the same "
    "options on the same pairs start the same way.")
