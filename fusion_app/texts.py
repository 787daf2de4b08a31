"""The app's prose: the page's description, the About tab, the tabs' introductions and the controls' labels.

Plain strings (no gradio), so the words can be read and changed in one place.
"""

from __future__ import annotations

from fusion_app import limits
from fusion_core import PRESETS, TrainConfig

FROM_SCRATCH = "random weights (size below)"
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
## What this is

DGD-Fusion merges two images of one scene into one: an **infrared** image with a **visible** one (the warm
bodies of the first in the scenery of the second), or an **MRI** slice with a **CT, PET or SPECT** slice of
the same head (the anatomy of the first with the bone or the activity of the second). It is a neural network
from a 2026 paper (Di, Huo, Wang, Liu and Lian, *Journal of Harbin Institute of Technology*,
DOI [10.11918/202507016](https://doi.org/10.11918/202507016)): a diffusion model learns what such pairs look
like, and a small fusion head decides, pixel by pixel, how much of each source the result takes. The colour
of the visible, PET or SPECT image is kept as it is; only brightness is fused.

## The two models

- **dgd-general**, for infrared + visible pairs: trained on MSRS (street scenes by day and night, 640 x 480)
  and scored on 100 pairs it never saw. Over the paper's seven metrics it ranks best on average against four
  classical methods and three published networks (IFCNN, SeAFusion, DenseFuse), and first on edge
  preservation (Qabf); the simple average of the two images keeps higher PSNR and SSIM, and IFCNN sharper
  detail.
- **dgd-medical**, for MRI + CT, MRI + PET and MRI + SPECT: the general model further trained on the
  Harvard Whole Brain Atlas (256 x 256 slices) and scored on patients it never saw. It ranks best on average on
  MRI + CT and MRI + PET and second on MRI + SPECT (IFCNN first), against the same seven methods.

Both were trained for a few hours on an ordinary two-core computer: small models, honest about their limits.
The bundled medical examples were part of dgd-medical's training or model choice, so they show what it does,
not how well it generalises. The full model cards, with every table and how each model was made, are below.

## Use

This is a **research tool. It is not a medical device and must not be used for diagnosis.** Do not upload
real patient data to a public Space: anything uploaded there is processed on a shared server. Of a DICOM file
only technical attributes (modality, size, window, spacing) are read and shown; a DICOM download is a new file
that carries nothing that identifies the inputs.
"""

METRIC_LEGEND = """\
Every score compares the fused image with both sources; higher is better in each column. The first seven are
the paper's.

- **EN** (entropy): how much information the fused image's grey levels carry, in bits.
- **MI** (mutual information): how much of each source's information the fused image keeps, summed over both.
- **SSIM** (structural similarity): how alike the fused image is to each source in local structure (1: alike).
- **PSNR** (peak signal-to-noise ratio): how close the fused pixels are to the sources' pixels, in dB.
- **SF** (spatial frequency): how much fine detail the fused image has (row and column changes).
- **Qabf** (edge preservation): how much of the sources' edges the fused image keeps (0 to 1).
- **CC** (correlation coefficient): how linearly the fused image follows each source (-1 to 1).
- **SD** (standard deviation): the contrast of the fused image, in grey levels.
- **AG** (average gradient): how sharp the fused image's edges are on average.
- **SCD** (sum of the correlations of differences): how much of what each source adds the fused image shows.
- **VIF** (visual information fidelity): how much of the sources' visual information survives, as a viewer
  would see it.

EN, SF, SD and AG also grow with noise, so read them beside the others.
"""

CONVENTIONS = {  # the Evaluate tab's choice -> what it means, in a line
    "standard": "Scored with the standard conventions: MI in bits, SSIM the mean over the two sources, PSNR "
                "against the full 0-255 range.",
    "published": "Scored as many published papers do (the CDDFuse evaluation script): MI in nats, SSIM the sum "
                 "over the two sources, PSNR against the fused image's peak; use it to compare with their tables.",
}

EVALUATE_INTRO = """\
Fuse every pair of a zip with the network and the four classical baselines and score them. The zip holds two \
folders with the same file names: `ir` + `vi`, `MRI` + `CT|PET|SPECT` or `A` + `B`; folders `fused/NAME/` beside \
them, with another method's fused image of each pair (named like the pair, the pair's size), are scored as method \
NAME. Without a zip, the bundled examples of the task are used."""

TRAIN_INTRO = (
    "Train or fine-tune the network on your own pairs (a zip as in the Evaluate tab, at most "
    f"{limits.MAX_TRAIN_PAIRS} pairs; without one, the bundled examples of the task). Stage 1 trains the "
    "diffusion UNet, stage 2 the fusion head, each at most "
    f"{limits.MAX_TRAIN_STEPS:,} steps. The `tiny` size makes a quick trial; real training wants a GPU "
    "and the command line. One run at a time. Every run here starts from the same random seed "
    f"({TrainConfig.seed}): the same options on the same pairs start the same way.")

# The Train tab's sizes of the network (random weights); the paper's ablation variants are offered apart.
SIZES = {
    "tiny": "tiny (a quick trial)",
    "cpu": "cpu (the bundled models' size)",
    "gpu": "gpu (wider; wants a GPU)",
}
NO_ABLATION = "none (the size above)"
MODULES = {"use_dfe": "DFE (expert convolutions)", "use_gfs": "GFS (gates)", "use_glsa": "GLSA (head attention)"}
ABLATION_INTRO = (
    "The paper's ablation variants (its Table 4), at the `cpu` size: each keeps some of the network's three "
    "modules, DFE (convolutions that mix several expert kernels per image), GFS (gates that keep or drop "
    "features) and GLSA (the fusion head's global-local attention), or changes the number of experts. Pick one "
    "to train it instead of the size above; a removed module is replaced by a plain convolution or block. "
    "GCFS is the paper's name for GFS.")


def ablation_notes() -> dict[str, str]:
    """Each ablation preset (those not in ``SIZES``) -> one line: the modules it keeps and its expert count."""
    notes = {}
    for name, config in PRESETS.items():
        if name in SIZES:
            continue
        flags = {"use_dfe": config.unet.use_dfe, "use_gfs": config.unet.use_gfs, "use_glsa": config.head.use_glsa}
        kept = [MODULES[f] for f, on in flags.items() if on]
        dropped = [MODULES[f].split(" ")[0] for f, on in flags.items() if not on]
        what = "all three modules" if not dropped else f"{' and '.join(kept)}; without {', '.join(dropped)}"
        experts = f"{config.unet.num_experts} experts" if config.unet.use_dfe else "no experts"
        notes[name] = f"**{name}**: {what}; {experts}."
    return notes
