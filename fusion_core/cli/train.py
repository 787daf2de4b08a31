"""``train``: parse the flags into a training request and run its stages with a progress bar."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
import threading
from collections.abc import Callable

from tqdm import tqdm

from ..config import HEAD_OUTPUTS, LOSS_WEIGHTS, PRESETS, LossConfig, TrainConfig
from ..distributed import check_device, setup_distributed
from ..training import TrainProgress, TrainRequest, prepare_run, run_stages
from .common import check_output_folder


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train stage 1 (UNet), stage 2 (fusion head) or both")
    p.add_argument("--data", required=True, nargs="+",
                   help="one or more folders of pairs ({ir,vi}, {MRI,CT|PET|SPECT} or {A,B}), trained on together")
    p.add_argument("--out", required=True, help="checkpoint folder to write (and resume from)")
    p.add_argument("--stage", default="both", choices=["1", "2", "both"])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--init", help="start from this checkpoint (fine-tuning)")
    p.add_argument("--head-from", metavar="CHECKPOINT",
                   help="start from this checkpoint's fusion head (config and weights); the UNet comes from --init "
                        "or --preset")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out, with the config (loss weights, head) saved there")
    p.add_argument("--stage1-steps", type=int, help="steps of stage 1 when --stage both (default --steps)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--val", help="folder of validation pairs (carved from the training data, e.g. with `split`): "
                   "stage 2 logs the network's mean rank against the baselines on them")
    p.add_argument("--head-output", choices=HEAD_OUTPUTS,
                   help="rebuild the fusion head with this output form (keeps the UNet; a new head)")
    p.add_argument("--head-channels", type=int, metavar="WIDTH",
                   help="a new fusion head of this width, trained from scratch (keeps the UNet)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name == "stage":
            continue
        flags = [f"--{f.name.replace('_', '-')}"] + (["--batch"] if f.name == "batch_size" else [])
        p.add_argument(*flags, dest=f.name, type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name))
    for name in LOSS_WEIGHTS:
        p.add_argument(f"--loss-{name}", dest=f"loss_{name}", type=float,
                       help=f"stage-2 loss weight of the {name} term (default: the model's config)")
    p.add_argument("--loss-intensity-mean", dest="loss_intensity_mean", type=float,
                   help="share of the sources' mean in the intensity term's target, 0 (the paper's max) to 1 "
                        "(default: the model's config)")
    p.add_argument("--loss-gradient-gain", dest="loss_gradient_gain", type=float,
                   help="factor on the gradient term's target, the sharper source's Sobel magnitude: 1 (the "
                        "paper's) to 4 (default: the model's config)")
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "stage"}
    train_config = TrainConfig(**fields)  # a bad seed, crop or step count fails now, before anything is built
    loss = {f.name: getattr(args, f"loss_{f.name}") for f in dataclasses.fields(LossConfig)}
    request = TrainRequest(
        data=tuple(args.data), out=args.out, train=train_config, stage=args.stage, preset=args.preset,
        init=args.init, head_from=args.head_from, resume=args.resume, stage1_steps=args.stage1_steps, val=args.val,
        head_output=args.head_output, head_channels=args.head_channels,
        loss={name: value for name, value in loss.items() if value is not None},
        command="python -m fusion_core " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    check_output_folder(args.out, create=True)
    device = check_device(args.device)
    context = setup_distributed(device)
    run = prepare_run(request, context.is_main)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    bars: dict[int, tuple[tqdm, Callable[[TrainProgress], None]]] = {}

    def progress(index: int, report: TrainProgress) -> None:
        if index not in bars:
            for bar, _ in bars.values():
                bar.close()
            bar = tqdm(total=report.total_steps, desc=f"stage {report.stage}", disable=not context.is_main)
            bars[index] = (bar, bar_callback(bar))
        bars[index][1](report)

    results = run_stages(run.model, run.dataset, run.configs, args.out, provenance=run.provenance, resume=run.resume,
                         progress=progress, stop=stop, device=device, validation=run.validation)
    for bar, _ in bars.values():
        bar.close()
    for result, config in zip(results, run.configs, strict=False):
        if context.is_main:
            print(f"stage {result.stage}: step {result.step}/{config.steps}, {result.crops_per_second:.2f} crops/s, "
                  f"{result.wall_seconds / 60:.1f} min in all -> {result.out_dir}")
    if results and results[-1].stopped:
        print("stopped; continue with --resume", file=sys.stderr)
        return 130
    return 0


def bar_callback(bar: tqdm):
    last_rank: list[float] = []

    def update(report: TrainProgress) -> None:
        bar.n = report.step
        if report.validation is not None:
            last_rank[:] = [report.validation]
        shown = {k: f"{v:.4f}" for k, v in report.losses.items()} | {"crops/s": f"{report.crops_per_second:.1f}"}
        bar.set_postfix(shown | ({"val rank": f"{last_rank[0]:.2f}"} if last_rank else {}))
    return update
