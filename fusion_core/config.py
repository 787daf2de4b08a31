"""Configuration of DGD-Fusion: frozen dataclasses saved as ``config.json`` beside the weights.

The paper (Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016) fixes the modules; the
widths below are ours, chosen by measurement so the default ``cpu`` preset fuses a 640x480 pair in about a
second on a 2-core CPU (see ``python -m fusion_core bench``). Ablation variants of the paper's Table 4 are
``PRESETS`` entries, never branches elsewhere. The two conventions the fusion metrics are reported in
(``CONVENTIONS``, used by metrics.py) are configuration too. Standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .cost import GLSA_LOCAL_GROUPS, check_budget


def _whole(owner: str, name: str, value: Any, low: int, high: int) -> None:
    """Refuse a ``value`` that is not a whole number in low..high, naming the field and the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{owner}.{name} must be a whole number in {low}..{high}, got {value!r}")


def _real(owner: str, name: str, value: Any, low: float, high: float) -> None:
    """Refuse a ``value`` that is not a number in [low, high], naming the field and the range."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{owner}.{name} must be a number in [{low}, {high}], got {value!r}")


def _flag(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{name} must be true or false, got {value!r}")


def _sequence(owner: str, name: str, value: Any, length: tuple[int, int], low: int, high: int) -> None:
    """Refuse anything but a tuple of ``length`` (min, max) whole numbers, each in low..high."""
    if not isinstance(value, tuple) or not length[0] <= len(value) <= length[1]:
        raise ValueError(f"{owner}.{name} must be a list of {length[0]} to {length[1]} whole numbers, got {value!r}")
    for item in value:
        _whole(owner, name, item, low, high)


MAX_WIDTH = 4096  # channels of any layer; far above the presets' widest (256), far below what exhausts memory


@dataclass(frozen=True)
class UNetConfig:
    """The denoising UNet eps_theta(x_t, t) (docs/design.md §2.4).

    ``space_to_depth`` folds each s x s block of pixels into channels before the first stage and unfolds the
    output after the last (pixel unshuffle / shuffle), so the UNet works at 1/s resolution; full-resolution
    detail reaches the fused image through the fusion head's own source branches. ``gfs_mask_norm`` puts a
    GroupNorm before each GFS spatial mask and ``gfs_standardise_mask`` gives each channel's mask zero spatial
    mean and unit spatial spread (layers/gated.py; docs/training.md "The gates"): both off in the ``cpu``
    preset and its ablation variants, on in the shipped ``dgd-general``, the first alone in ``dgd-medical``.
    """

    in_channels: int = 4
    channels: tuple[int, ...] = (16, 32, 64, 64)
    space_to_depth: int = 4
    num_experts: int = 4
    kernel_size: int = 3
    time_embed_dim: int = 64
    norm_groups: int = 8
    dropout: float = 0.0
    use_dfe: bool = True
    use_gfs: bool = True
    gfs_mask_norm: bool = False
    gfs_standardise_mask: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field outside its allowed range (a hand-edited config.json)."""
        owner = "unet"
        _whole(owner, "in_channels", self.in_channels, 1, 64)
        _sequence(owner, "channels", self.channels, (1, 8), 1, MAX_WIDTH)
        _whole(owner, "space_to_depth", self.space_to_depth, 1, 16)
        _whole(owner, "num_experts", self.num_experts, 1, 64)
        _whole(owner, "kernel_size", self.kernel_size, 1, 15)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"unet.kernel_size must be odd (1, 3, 5, ... 15), got {self.kernel_size}")
        _whole(owner, "time_embed_dim", self.time_embed_dim, 1, MAX_WIDTH)
        _whole(owner, "norm_groups", self.norm_groups, 1, MAX_WIDTH)
        _real(owner, "dropout", self.dropout, 0.0, 1.0)
        for name in ("use_dfe", "use_gfs", "gfs_mask_norm", "gfs_standardise_mask"):
            _flag(owner, name, getattr(self, name))

    @property
    def stride(self) -> int:
        """Side length every input must be a multiple of (the pipeline pads to it)."""
        return self.space_to_depth * 2 ** len(self.channels)


@dataclass(frozen=True)
class DiffusionConfig:
    """The forward process of eq. 1: linear beta schedule from ``beta_start`` to ``beta_end``."""

    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field outside its allowed range."""
        _whole("diffusion", "num_timesteps", self.num_timesteps, 1, 100_000)
        _real("diffusion", "beta_start", self.beta_start, 0.0, 1.0)
        _real("diffusion", "beta_end", self.beta_end, 0.0, 1.0)
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"diffusion betas must satisfy 0 < beta_start <= beta_end < 1, got "
                             f"{self.beta_start} and {self.beta_end}")


HEAD_OUTPUTS = ("weight_map", "intensity")


@dataclass(frozen=True)
class FusionHeadConfig:
    """The cross-layer attention fusion head (docs/design.md §2.5).

    ``head_downsample`` is the stride s of the overlapping patch embedding of stages 1 and 2 (kernel s + 2,
    so neighbouring patches overlap); the final stage runs at full resolution. Stages 1 and 2 at half
    resolution cost a quarter of the full-resolution work, which the CPU speed target needs.

    ``output`` is what the last convolution predicts: ``"weight_map"`` (default) a per-pixel share
    w_A = softmax(l_A, l_B)_A of Y_A against Y_B plus a detail residual bounded by ``residual_scale``, so an
    untrained head already gives the average of the sources; ``"intensity"`` Y_F itself through a sigmoid,
    the form of the first checkpoints, kept to measure the difference (docs/training.md).
    """

    def __post_init__(self):
        self.validate()

    channels: int = 16
    num_heads: int = 2
    ffn_expansion: float = 2.0
    head_downsample: int = 2
    use_glsa: bool = True
    feature_timesteps: tuple[int, ...] = (5, 50, 100)
    time_embed_dim: int = 64
    output: str = "weight_map"
    residual_scale: float = 0.25

    def validate(self) -> None:
        """Raise ValueError naming the first field outside its allowed range."""
        owner = "head"
        _whole(owner, "channels", self.channels, 1, MAX_WIDTH)
        _whole(owner, "num_heads", self.num_heads, 1, 64)
        if self.channels % self.num_heads:
            raise ValueError(f"head.channels ({self.channels}) must be a multiple of head.num_heads "
                             f"({self.num_heads})")
        _real(owner, "ffn_expansion", self.ffn_expansion, 0.25, 16.0)
        if int(self.channels * self.ffn_expansion) < 1:
            raise ValueError(f"head.channels x head.ffn_expansion ({self.channels} x {self.ffn_expansion}) must be "
                             "at least 1, the width of the feed-forward layer")
        _whole(owner, "head_downsample", self.head_downsample, 1, 16)
        _flag(owner, "use_glsa", self.use_glsa)
        if self.use_glsa and self.channels % GLSA_LOCAL_GROUPS:
            raise ValueError(f"head.channels ({self.channels}) must be a multiple of {GLSA_LOCAL_GROUPS} with "
                             f"head.use_glsa (GLSA's grouped convolution has {GLSA_LOCAL_GROUPS} groups)")
        _sequence(owner, "feature_timesteps", self.feature_timesteps, (1, 16), 0, 99_999)
        _whole(owner, "time_embed_dim", self.time_embed_dim, 1, MAX_WIDTH)
        if self.output not in HEAD_OUTPUTS:
            raise ValueError(f"head output must be one of {HEAD_OUTPUTS}, got {self.output!r}")
        _real(owner, "residual_scale", self.residual_scale, 0.0, 10.0)


LOSS_WEIGHTS = ("intensity", "gradient", "ssim")  # the LossConfig fields that weight a term


@dataclass(frozen=True)
class LossConfig:
    """Stage-2 loss (docs/design.md §2.7): the weights of the intensity, Sobel gradient and SSIM terms.

    intensity_mean is the share of the sources' mean in the intensity term's target,
    (1 - m) * max(Y_A, Y_B) + m * (Y_A + Y_B) / 2: 0 is the paper's max target, 1 the mean
    (docs/training.md, "The intensity target"). gradient_gain k scales the gradient term's target,
    k * max(|Sobel Y_A|, |Sobel Y_B|): 1 is the paper's, above 1 asks for edges sharper than the sharper source's.
    """

    intensity: float = 1.0
    gradient: float = 10.0
    ssim: float = 1.0
    intensity_mean: float = 0.0
    gradient_gain: float = 1.0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first weight outside [0, 1e6], share outside [0, 1] or gain outside [1, 4]."""
        for name in LOSS_WEIGHTS:
            _real("loss", name, getattr(self, name), 0.0, 1e6)
        _real("loss", "intensity_mean", self.intensity_mean, 0.0, 1.0)
        _real("loss", "gradient_gain", self.gradient_gain, 1.0, 4.0)


@dataclass(frozen=True)
class FusionConfig:
    """Everything needed to rebuild a trained DGD-Fusion model with no outside flags.

    A FusionConfig is also refused by what its network would cost (cost.py, by arithmetic: nothing is built):
    more than ``cost.MAX_PARAMETERS`` (100 M) parameters, or more than ``cost.MAX_INFERENCE_BYTES`` (32 GB) of
    activations to fuse one 1024 x 1024 tile, the pipeline's tile size. Every preset is far inside both (the
    widest, ``gpu``: 27 M parameters and about 3.3 GB), so these budgets only stop a hand-edited config.json
    or a typed width that would exhaust the machine.
    """

    name: str = "cpu"
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    head: FusionHeadConfig = field(default_factory=FusionHeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for parts of the wrong type, a UNet too shallow for the head, or a network beyond
        the cost budgets (the message gives the estimate)."""
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= MAX_NAME:
            raise ValueError(f"config name must be a text of 1 to {MAX_NAME} characters, got {self.name!r}")
        for key, part in PARTS.items():
            if not isinstance(getattr(self, key), part):
                raise ValueError(f"config {key} must be a {part.__name__}, got {getattr(self, key)!r}")
        if len(self.unet.channels) <= DEEP_FEATURE_INDEX:
            raise ValueError(f"unet.channels must list at least {DEEP_FEATURE_INDEX + 1} widths (the fusion head reads "
                             f"the second decoder stage), got {list(self.unet.channels)}")
        check_budget(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "config.json") -> FusionConfig:
        """Inverse of ``to_dict``. Anything else raises ``ValueError`` naming what is wrong: not an object,
        unknown keys, a part that is not an object, a field of the wrong type or out of range, or a network
        beyond the cost budgets. ``source`` names the data in the messages."""
        _expect_object(data, source)
        unknown = set(data) - set(PARTS) - {"name"}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)} in {source}; is this a DGD-Fusion config.json?")
        kwargs: dict[str, Any] = {"name": data.get("name", "custom")}
        for key, part in PARTS.items():
            if key in data:
                _expect_object(data[key], f'{source}\'s "{key}"')
                kwargs[key] = _build(key, part, data[key])
        return cls(**kwargs)


MAX_NAME = 200  # characters of a config's name (it heads the model card)
DEEP_FEATURE_INDEX = 1  # the decoder stage the fusion head reads first (models/fusion_head.py)
PARTS = {"unet": UNetConfig, "diffusion": DiffusionConfig, "head": FusionHeadConfig, "loss": LossConfig}


def describe_json(value: Any) -> str:
    """The JSON kind of a parsed value, for messages: 'a list', 'a string', 'null', ..."""
    kinds = ((bool, "true or false"), (dict, "an object"), (list, "a list"), (str, "a string"), (int, "a number"),
             (float, "a number"), (type(None), "null"))
    return next((kind for cls, kind in kinds if isinstance(value, cls)), type(value).__name__)


def _expect_object(value: Any, what: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must hold an object ({{...}}), got {describe_json(value)}")


def _build(key: str, part: type, values: dict[str, Any]) -> Any:
    """Build one frozen sub-config from a dict, turning JSON lists back into tuples."""
    names = {f.name for f in dataclasses.fields(part)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {key} fields {sorted(unknown)}; {key} has {sorted(names)}")
    return part(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _variant(name: str, base: FusionConfig, *, dfe: bool = True, gfs: bool = True, glsa: bool = True,
             experts: int = 4) -> FusionConfig:
    """An ablation variant of ``base`` (paper Table 4)."""
    unet = dataclasses.replace(base.unet, use_dfe=dfe, use_gfs=gfs, num_experts=experts)
    head = dataclasses.replace(base.head, use_glsa=glsa)
    return dataclasses.replace(base, name=name, unet=unet, head=head)


CPU = FusionConfig()
GPU = FusionConfig(
    name="gpu",
    unet=UNetConfig(channels=(64, 128, 256, 256), space_to_depth=2, time_embed_dim=256, norm_groups=32),
    head=FusionHeadConfig(channels=48, num_heads=4, head_downsample=1, time_embed_dim=256),
)
# For quick trial runs (the app's training tab, smoke tests): about a tenth of the cpu preset's work.
TINY = FusionConfig(
    name="tiny",
    unet=UNetConfig(channels=(8, 16, 16, 16), space_to_depth=4, time_embed_dim=32, norm_groups=4),
    head=FusionHeadConfig(channels=8, num_heads=2, time_embed_dim=32),
)

# The architectures that ship in assets/checkpoints (each checkpoint's config.json names its preset): the cpu
# preset's widths with a GroupNorm before each GFS spatial mask, and the stage-2 loss weights each was trained
# with (docs/training.md). Their UNets differ, so one cannot stand in for the other without retraining.
DGD_GENERAL = FusionConfig(name="dgd-general", unet=UNetConfig(gfs_mask_norm=True, gfs_standardise_mask=True),
                           loss=LossConfig(ssim=3.0))
DGD_MEDICAL = FusionConfig(name="dgd-medical", unet=UNetConfig(gfs_mask_norm=True),
                           loss=LossConfig(intensity=6.0, ssim=12.0, intensity_mean=0.7))

# Every architecture that ships or that the ablation trains: the one place a network is chosen by name.
PRESETS: dict[str, FusionConfig] = {
    "cpu": CPU,
    "dgd-general": DGD_GENERAL,
    "dgd-medical": DGD_MEDICAL,
    "gpu": GPU,
    "tiny": TINY,
    "ALL": _variant("ALL", CPU),
    "DFE+GCFS": _variant("DFE+GCFS", CPU, glsa=False),
    "DFE+GLSA": _variant("DFE+GLSA", CPU, gfs=False),
    "GCFS+GLSA": _variant("GCFS+GLSA", CPU, dfe=False),
    "DFE_3": _variant("DFE_3", CPU, experts=3),
    "DFE_5": _variant("DFE_5", CPU, experts=5),
}


@dataclass(frozen=True)
class TrainConfig:
    """One training run (stage 1: the UNet on the diffusion loss; stage 2: the head, UNet frozen).

    Everything random in step s is drawn from a generator seeded with (seed, step), so a run stopped and
    resumed at any step continues exactly as if it had never stopped. ``validate_every`` is how often stage 2
    ranks the network against the classical baselines on the validation pairs (0: never). ``gate_lr`` > 0
    lets stage 2 also train the UNet's GFS gate parameters (spatial mask and channel attention) with the
    fusion loss at that learning rate, the rest of the UNet staying frozen (docs/training.md, "Gates").
    """

    stage: int = 1
    steps: int = 1000
    batch_size: int = 8
    crop: int = 128
    lr: float = 1e-4
    seed: int = 0
    checkpoint_every: int = 200
    preview_every: int = 200
    log_every: int = 10
    timestep_jitter: float = 0.5
    validate_every: int = 250
    gate_lr: float = 0.0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field outside its allowed range (a typed flag, say)."""
        owner = "train"
        _whole(owner, "stage", self.stage, 1, 2)
        _whole(owner, "steps", self.steps, 0, 10**12)
        _whole(owner, "batch_size", self.batch_size, 1, MAX_BATCH)
        _whole(owner, "crop", self.crop, 1, MAX_CROP)
        _real(owner, "lr", self.lr, 0.0, 1.0)
        _whole(owner, "seed", self.seed, 0, MAX_SEED)
        _whole(owner, "log_every", self.log_every, 1, 10**12)
        for name in ("checkpoint_every", "preview_every", "validate_every"):
            _whole(owner, name, getattr(self, name), 0, 10**12)
        _real(owner, "timestep_jitter", self.timestep_jitter, 0.0, 5.0)
        _real(owner, "gate_lr", self.gate_lr, 0.0, 1.0)


# A step draws batch_size crops (pairs chosen with replacement, so a batch may exceed the pair count) and holds
# them all with their activations: 256 crops of 128 x 128 already need about 20 GB in the cpu preset's stage 2.
# training/run.py also refuses a batch whose step is estimated beyond cost.MAX_TRAINING_BYTES.
MAX_BATCH = 256
MAX_CROP = 4096  # four times the pipeline's tile; a crop beyond an image is reflect-padded up to it
MAX_SEED = 2**32 - 1  # train seeds step s with (seed * 1_000_003 + s) * 257 + rank, which must stay below 2**64


# ------------------------------------------------------------------------------------- metric conventions

METRIC_DATA_RANGE = 255.0  # the range of 0..255 data, as SSIM's constants see it in the standard convention


@dataclass(frozen=True)
class Convention:
    """How the metrics that papers compute differently are reported (see metrics.py's module docstring)."""

    name: str
    mi_log_base: float  # 2 -> bits, e -> nats
    ssim_reduction: str  # "mean" or "sum" over the two sources
    ssim_data_range: float  # 255 for 0..255 data; 2 reproduces scikit-image < 0.20 on float input
    psnr_peak: float | None  # None -> max(F)
    qabf_toolbox_compatible: bool  # zero padding and unwrapped orientations, as Qabf.m
    summary: str  # one line, printed above every table


CONVENTIONS: dict[str, Convention] = {
    "standard": Convention(
        "standard", 2.0, "mean", METRIC_DATA_RANGE, 255.0, False,
        "standard: MI in bits (sum over A and B); SSIM = mean of SSIM(F,A) and SSIM(F,B) "
        "(7x7 window, data range 255); PSNR with peak 255; Qabf with reflected borders",
    ),
    "published": Convention(
        "published", math.e, "sum", 2.0, None, True,
        "published (as CDDFuse's utils/Evaluator.py): MI in nats (sum over A and B); SSIM = SSIM(F,A) + "
        "SSIM(F,B) (7x7 window, data range 2 as scikit-image < 0.20 assumed); PSNR with peak max(F); "
        "Qabf as MATLAB Qabf.m (zero padding, unwrapped orientation)",
    ),
}


def get_convention(name: str) -> Convention:
    """The Convention called name; ValueError listing the known names otherwise."""
    if name not in CONVENTIONS:
        raise ValueError(f"unknown metric convention {name!r}; choose one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


def check_seed(seed: int) -> int:
    """``seed`` if it is a whole number in 0..MAX_SEED (a torch generator's range, with room for steps)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number in 0..{MAX_SEED}, got {seed!r}")
    return seed


def parse_timesteps(text: str | None, *, num_timesteps: int = DiffusionConfig.num_timesteps
                    ) -> tuple[int, ...] | None:
    """Feature timesteps typed by a person: '5, 50, 100' -> (5, 50, 100); empty or None -> None (the model's own).

    Commas, semicolons and spaces all separate. Order is kept: the head reads its feature branches in order.
    How many a model reads is its head's ``feature_timesteps`` length, checked by ``FusionPipeline.fuse``.

    Raises:
        ValueError: a part that is not a whole number, one outside [0, num_timesteps), or a repeated one;
            the message shows the text and an example.
    """
    if text is None or not text.strip():
        return None
    parts = [part for part in re.split(r"[,;\s]+", text.strip()) if part]
    example = "e.g. 5, 50, 100"
    try:
        timesteps = tuple(int(part) for part in parts)
    except ValueError:
        raise ValueError(f"feature timesteps must be whole numbers separated by commas, {example} "
                         f"(got {text!r})") from None
    outside = [t for t in timesteps if not 0 <= t < num_timesteps]
    if outside:
        raise ValueError(f"feature timesteps must lie in 0..{num_timesteps - 1}, {example}; {outside} do not "
                         f"(got {text!r})")
    repeated = sorted({t for t in timesteps if timesteps.count(t) > 1})
    if repeated:
        raise ValueError(f"feature timesteps must differ, {example}; {repeated} repeat (got {text!r})")
    return timesteps
