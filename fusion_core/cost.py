"""What a DGD-Fusion configuration costs, by arithmetic alone: its parameters and its activation memory.

config.py refuses a configuration beyond the budgets below while it validates, so a hand-edited
``config.json``, a preset and a checkpoint are refused before a single tensor is allocated; training/run.py
refuses a training step beyond its budget the same way. The counts follow the modules' ``__init__`` and
``forward`` code (layers/, models/). Configurations are read by their fields alone, so this module imports
nothing of the package: standard library only, in the config tier.

Budgets (generous: the widest preset, ``gpu``, needs a tenth of each or less):

* ``MAX_PARAMETERS`` = 100 M. The shipped networks have 1.8 M parameters and ``gpu`` 27 M; 100 M float32
  parameters are 0.4 GB of weights, 1.6 GB with a training run's gradients and Adam moments.
* ``MAX_INFERENCE_BYTES`` = 32 GB of activations to fuse one ``REFERENCE_TILE`` x ``REFERENCE_TILE`` tile (the
  pipeline's tile size: a larger image is fused tile by tile, so one tile bounds inference). ``cpu`` needs
  about 0.43 GB, ``gpu`` about 3.3 GB.
* ``MAX_TRAINING_BYTES`` = 64 GB for one training step: the activations kept for the backward pass of a batch
  of crops, with the weights, gradients and Adam moments. The default run (batch 8 of 128 x 128 crops) needs
  about 0.65 GB in the ``cpu`` preset's stage 2 and 6.9 GB in ``gpu``'s.

How the memory is counted, and how close it comes. Elements are float32. A block's ``created`` count is every
tensor its ``forward`` makes (what autograd keeps for the backward pass); its ``live`` count the most of them
alive at once without gradients; ``held`` what is kept across it (the UNet's skips and the noisy inputs; the
UNet's decoder features while the head runs). Reshapes that copy are counted, views are not. Against the peak
resident memory of a CPU process (one thread, after a warm-up pass), the parameter count is exact
(tests/test_cost.py); a training step's activations came to 0.84-1.21 of the measured growth (``cpu`` and
``gpu``, stages 1 and 2, batch 8 of 128 x 128 crops); inference to 0.52-0.80 of it (tiles of 512 and 1024),
the rest being convolution workspaces and memory the allocator keeps, which the budget leaves room for.
CUDA runs in bfloat16 under autocast and needs less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FLOAT_BYTES = 4
MAX_PARAMETERS = 100_000_000
REFERENCE_TILE = 1024  # pipeline.FusionPipeline's default tile_size
MAX_INFERENCE_BYTES = 32 * 10**9
MAX_TRAINING_BYTES = 64 * 10**9
TRAINING_STATE_PER_PARAMETER = 4  # float32 weight, gradient and Adam's two moments
DEEP_FEATURE_INDEX = 1  # the decoder stage the head reads first (models/fusion_head.py)
GLSA_LOCAL_GROUPS = 4  # GlobalLocalAttention's grouped 3x3 convolution (layers/glsa.py)


# ------------------------------------------------------------------------------------------------ parameters

def _conv(in_channels: int, out_channels: int, kernel: int, groups: int = 1) -> int:
    return out_channels * (in_channels // groups) * kernel * kernel + out_channels


def _linear(in_features: int, out_features: int) -> int:
    return in_features * out_features + out_features


def _time_embedding(dim: int, num_timesteps: int = 1) -> int:
    """layers/embeddings.py TimeEmbedding: Linear(D T, 2D), Linear(2D, D)."""
    return _linear(dim * num_timesteps, 2 * dim) + _linear(2 * dim, dim)


def _film(dim: int, channels: int) -> int:
    """FeatureWiseAffine: Linear(D, 2C)."""
    return _linear(dim, 2 * channels)


def _extract_parameters(i: int, o: int, unet: Any) -> int:
    """DFE (channel transform, expert gate, M expert kernels of o x o x K x K, GroupNorm) or PlainConvBlock."""
    m, k = unet.num_experts, unet.kernel_size
    if not unet.use_dfe:
        return _conv(i, o, 1) + _conv(o, o, k) + 2 * o
    gate = _conv(o, o, 3) + _linear(o, m) + _linear(unet.time_embed_dim, m)
    return _conv(i, o, 1) + gate + m * o * o * k * k + m * o + 2 * o


def _select_parameters(i: int, c: int, unet: Any) -> int:
    """GFS (layers/gated.py) or PlainResidualBlock; a 1x1 residual projection when the widths differ."""
    residual = _conv(i, c, 1) if i != c else 0
    if not unet.use_gfs:
        return 2 * i + _conv(i, c, 3) + _linear(unet.time_embed_dim, c) + 2 * c + _conv(c, c, 3) + residual
    hidden = max(c // 4, 4)
    mask = _conv(c, c, 3, groups=c) + (2 * c if unet.gfs_mask_norm else 0)
    channel = _linear(c, hidden) + _linear(hidden, c)
    out = 2 * c + _conv(c, c, 3)
    return 2 * i + _conv(i, 2 * c, 1) + _conv(c, c, 3) + mask + channel + _film(unet.time_embed_dim, c) + out + residual


def unet_parameters(unet: Any) -> int:
    """Parameters of models/unet.py DenoisingUNet built from ``unet`` (a UNetConfig)."""
    widths, folded = unet.channels, unet.in_channels * unet.space_to_depth ** 2
    count = _time_embedding(unet.time_embed_dim) + _conv(folded, widths[0], 3)
    previous = widths[0]
    for width in widths:  # encoder stage, then its stride-2 convolution
        count += _extract_parameters(previous, width, unet) + _select_parameters(width, width, unet)
        count += _conv(width, width, 3)
        previous = width
    count += _select_parameters(previous, previous, unet)  # bottleneck
    for width in reversed(widths):  # upsampling convolution, then the stage over upsampled + skip
        count += _conv(previous, previous, 3)
        count += _extract_parameters(previous + width, width, unet) + _select_parameters(width, width, unet)
        previous = width
    return count + 2 * previous + _conv(previous + folded, folded, 3)  # out_norm, out


def _attention_parameters(c: int, num_heads: int) -> int:
    """layers/restormer.py TransposedAttention (MDTA): temperature, qkv 1x1, depthwise 3x3, projection."""
    return num_heads + _conv(c, 3 * c, 1) + _conv(3 * c, 3 * c, 3, groups=3 * c) + _conv(c, c, 1)


def head_parameters(head: Any, unet: Any) -> int:
    """Parameters of models/fusion_head.py CrossLayerFusionHead built from ``head`` and ``unet``."""
    c, s, num_t = head.channels, head.head_downsample, len(head.feature_timesteps)
    hidden = int(c * head.ffn_expansion)
    ffn = _conv(c, 2 * hidden, 1) + _conv(2 * hidden, 2 * hidden, 3, groups=2 * hidden) + _conv(hidden, c, 1)
    block = 2 * c + _attention_parameters(c, head.num_heads) + 2 * c + ffn + _film(head.time_embed_dim, c)
    if head.use_glsa:
        fusion = (_conv(2 * c, c, 1) + _conv(c, c, 1) + _conv(c, c, 3, groups=GLSA_LOCAL_GROUPS) + _conv(3 * c, c, 1)
                  + _attention_parameters(c, head.num_heads) + 2 * c)
    else:
        fusion = _conv(2 * c, c, 1)
    decoder_widths = tuple(reversed(unet.channels))
    projections = _conv(num_t * decoder_widths[DEEP_FEATURE_INDEX], c, 1) + _conv(num_t * decoder_widths[-1], c, 1)
    last = _conv(c, 3 if head.output == "weight_map" else 1, 3)
    reconstruct = _conv(2 * c, c, 1) + _conv(c, c, 3) + last
    return (_time_embedding(head.time_embed_dim, num_t) + 2 * _conv(1, c, s + 2) + 4 * block + 2 * fusion
            + projections + 2 * _conv(2 * c, c, 1) + _conv(2, c, 3) + reconstruct)


def parameter_count(config: Any) -> int:
    """Parameters of models/dgd_fusion.py DGDFusionModel built from ``config`` (a FusionConfig)."""
    return unet_parameters(config.unet) + head_parameters(config.head, config.unet)


# -------------------------------------------------------------------------------------------- activations

@dataclass(frozen=True)
class Block:
    """One block of a forward pass, in float32 elements: every tensor it creates (what autograd keeps for the
    backward pass), the most of them alive at once without gradients, and what is held across it."""

    name: str
    created: float
    live: float
    held: float


def _extract_counts(o: int, unet: Any) -> tuple[int, int]:
    """(created, live) per pixel of DFE: channel transform, gate conv + SiLU, dynamic conv, GroupNorm, SiLU;
    or of the plain conv block: 1x1, KxK, GroupNorm, SiLU."""
    return (6 * o, 3 * o) if unet.use_dfe else (4 * o, 3 * o)


def _select_counts(i: int, c: int, unet: Any) -> tuple[int, int]:
    """(created, live) per pixel of GFS: GroupNorm, expand to 2C (alive to the end: its second half is read
    late), main conv, mask (norm, standardise), gate, FiLM, output branch, residual; or of the plain block."""
    residual = c if i != c else 0
    if not unet.use_gfs:
        return 2 * i + 6 * c + residual, i + 4 * c + residual
    standardise = 2 * c if unet.gfs_standardise_mask else 0
    created = i + 14 * c + (c if unet.gfs_mask_norm else 0) + standardise + residual
    return created, 7 * c + standardise + residual


def _mixed_kernels(i: int, o: int, unet: Any, batch: int) -> int:
    """Each sample's mixture of the DFE's expert kernels (B, C, C, K, K), not per pixel."""
    return batch * o * o * unet.kernel_size ** 2 if unet.use_dfe else 0


def unet_blocks(unet: Any, side: float, batch: int) -> list[Block]:
    """The UNet's blocks on ``batch`` inputs of side x side (4 channels)."""
    widths, folded = unet.channels, unet.in_channels * unet.space_to_depth ** 2
    pixels = [(side / unet.space_to_depth / 2 ** i) ** 2 * batch for i in range(len(widths) + 1)]  # times B
    held = 2 * folded * pixels[0]  # x_t and its folded copy, which the output convolution reads again
    blocks, skips, previous = [Block("stem", widths[0] * pixels[0], widths[0] * pixels[0], held)], [], widths[0]
    for i, width in enumerate(widths):
        (ec, el), (sc, sl) = _extract_counts(width, unet), _select_counts(width, width, unet)
        kernels = _mixed_kernels(previous, width, unet, batch)
        blocks.append(Block(f"down{i + 1}", (ec + sc) * pixels[i] + kernels, max(el, width + sl) * pixels[i] + kernels,
                            held + sum(skips) + previous * pixels[i]))
        skips.append(width * pixels[i])
        blocks.append(Block(f"downsample{i + 1}", width * pixels[i + 1], width * pixels[i + 1], held + sum(skips)))
        previous = width
    created, live = _select_counts(previous, previous, unet)
    blocks.append(Block("mid", created * pixels[-1], live * pixels[-1], held + sum(skips)))
    features = 0.0
    for i, width in zip(range(len(widths) - 1, -1, -1), reversed(widths), strict=True):
        concat = previous + width
        (ec, el), (sc, sl) = _extract_counts(width, unet), _select_counts(width, width, unet)
        kernels = _mixed_kernels(concat, width, unet, batch)
        created = (2 * previous + concat + ec + sc) * pixels[i] + kernels  # interpolate, conv, concatenation
        live = max(2 * previous + concat, concat + el, width + sl) * pixels[i] + kernels
        blocks.append(Block(f"up{len(widths) - i}", created, live,
                            held + sum(skips) + features + previous * pixels[i + 1]))
        skips.pop()
        features += width * pixels[i]
        previous = width
    out = (3 * previous + 2 * folded) * pixels[0]  # GroupNorm, SiLU, concatenation, conv
    blocks.append(Block("out", out, out, held + features))
    return blocks


def _block_counts(c: int, hidden: int) -> tuple[int, int]:
    """(created, live) per pixel of a ConditionedBlock: two LayerNorm2d (5C each), MDTA (qkv, depthwise,
    copied heads, normalised q and k, output: 14C), GDFN (6 hidden + C), the residuals and FiLM."""
    return 5 * c + 14 * c + c + 5 * c + 6 * hidden + c + c + 2 * c, max(10 * c, 3 * c + 4 * hidden)


def head_blocks(head: Any, unet: Any, side: float, batch: int) -> list[Block]:
    """The fusion head's blocks on ``batch`` tiles of side x side, holding the UNet's decoder features."""
    c, num_t = head.channels, len(head.feature_timesteps)
    pixels, full = (side / head.head_downsample) ** 2 * batch, side ** 2 * batch
    decoder = [(w, (side / unet.space_to_depth / 2 ** i) ** 2 * batch)
               for i, w in zip(range(len(unet.channels) - 1, -1, -1), reversed(unet.channels), strict=True)]
    held = sum(num_t * w * p for w, p in decoder) + 6 * full  # decoder features, a, y_b, x0
    block_created, block_live = (n * pixels for n in _block_counts(c, int(c * head.ffn_expansion)))
    fusion_created, fusion_live = (n * c * pixels for n in ((31, 11) if head.use_glsa else (3, 3)))
    deep, last = decoder[DEEP_FEATURE_INDEX][1], decoder[-1][1]
    return [
        Block("stage1", 2 * (c * pixels + block_created), c * pixels + block_live, held + c * pixels),
        Block("fuse1", fusion_created, fusion_live, held + 2 * c * pixels),
        Block("stage2", c * deep + 4 * c * pixels + block_created, c * deep + 2 * c * pixels + block_live,
              held + c * pixels),
        Block("fuse2", fusion_created, fusion_live, held + 2 * c * pixels),
        Block("stage3", c * last + 4 * c * pixels + block_created, c * last + 2 * c * pixels + block_live,
              held + c * pixels),
        Block("reconstruct", (8 * c + 13) * full + c * pixels, (5 * c + 8) * full, held + c * pixels),
    ]


def _peak(blocks: list[Block]) -> float:
    return max(b.live + b.held for b in blocks)


def inference_bytes(config: Any, side: float = REFERENCE_TILE, batch: int = 1) -> int:
    """Estimated peak activation memory (bytes) of fusing ``batch`` tiles of side x side without gradients.

    The UNet runs once on the T feature timesteps of each tile (a batch of T * batch), beside the noise and
    the noised inputs; then the head runs holding the UNet's decoder features.
    """
    num_t = len(config.head.feature_timesteps)
    noised = 3 * 4 * side ** 2 * num_t * batch  # the repeated x0, the noise and x_t
    unet = _peak(unet_blocks(config.unet, side, num_t * batch)) + noised
    head = _peak(head_blocks(config.head, config.unet, side, batch))
    return round(max(unet, head) * FLOAT_BYTES)


def training_bytes(config: Any, stage: int, crop: int, batch: int, tune_gates: bool = False) -> int:
    """Estimated memory (bytes) of one training step: every activation of the trained part kept for the
    backward pass, the frozen part's peak without gradients, and the weights, gradients and Adam moments.

    Stage 1 trains the UNet on the diffusion loss; stage 2 the head (and, with ``tune_gates``, the UNet's
    gates, so the UNet's activations are kept too) on the features of the frozen UNet.
    """
    state = TRAINING_STATE_PER_PARAMETER * parameter_count(config)
    if stage == 1:
        kept = sum(b.created for b in unet_blocks(config.unet, crop, batch)) + 3 * 4 * crop ** 2 * batch
        return round((kept + state) * FLOAT_BYTES)
    num_t = len(config.head.feature_timesteps)
    unet = unet_blocks(config.unet, crop, num_t * batch)
    unet_part = sum(b.created for b in unet) if tune_gates else _peak(unet)
    head_part = sum(b.created for b in head_blocks(config.head, config.unet, crop, batch))
    return round((unet_part + head_part + 3 * 4 * crop ** 2 * num_t * batch + state) * FLOAT_BYTES)


# ------------------------------------------------------------------------------------------------- budgets

def describe_size(count: float, unit: str = "") -> str:
    """1_234_567 -> '1.2 M', 3.4e9 bytes with unit 'B' -> '3.4 GB'."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.3g} {prefix}{unit}"
    return f"{count:.0f} {unit}".rstrip()


def check_budget(config: Any) -> None:
    """Raise ValueError, with the estimate, when ``config``'s network is beyond MAX_PARAMETERS or fusing one
    reference tile needs more than MAX_INFERENCE_BYTES; nothing is built."""
    widths = f"unet.channels {list(config.unet.channels)}, head.channels {config.head.channels}"
    parameters = parameter_count(config)
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"{widths}: about {describe_size(parameters)} parameters "
                         f"({describe_size(parameters * FLOAT_BYTES, 'B')}), more than the "
                         f"{describe_size(MAX_PARAMETERS)} this project builds (the presets have at most 27 M); "
                         "use narrower layers, fewer experts or a smaller kernel")
    memory = inference_bytes(config)
    if memory > MAX_INFERENCE_BYTES:
        raise ValueError(f"{widths}: fusing one {REFERENCE_TILE}x{REFERENCE_TILE} tile needs about "
                         f"{describe_size(memory, 'B')} of activations, more than the "
                         f"{describe_size(MAX_INFERENCE_BYTES, 'B')} this project allows; use narrower layers or "
                         "a larger space_to_depth or head_downsample")


def check_training_budget(config: Any, stage: int, crop: int, batch: int, tune_gates: bool = False) -> None:
    """Raise ValueError, with the estimate and the largest batch that fits, when one training step of
    ``batch`` crops of crop x crop is estimated beyond MAX_TRAINING_BYTES."""
    memory = training_bytes(config, stage, crop, batch, tune_gates)
    if memory <= MAX_TRAINING_BYTES:
        return
    fixed = training_bytes(config, stage, crop, 0, tune_gates)  # the estimate is fixed + batch x per crop
    per_crop = training_bytes(config, stage, crop, 1, tune_gates) - fixed
    fits = max(0, (MAX_TRAINING_BYTES - fixed) // max(per_crop, 1))
    advice = f"use at most batch {fits}" if fits else "use a smaller crop"
    raise ValueError(f"batch {batch} of {crop}x{crop} crops: a stage-{stage} step of {config.name!r} needs about "
                     f"{describe_size(memory, 'B')}, more than the {describe_size(MAX_TRAINING_BYTES, 'B')} this "
                     f"project allows; {advice}")

