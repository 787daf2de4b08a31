"""The parser of every command and ``main``: one ``error:`` line for a known error, with its exit status."""

from __future__ import annotations

import argparse
import sys

from ..checkpoint import CheckpointError
from ..folder_fusion import FolderRunStopped
from ..imaging import ImageLoadError, OutputWriteError
from .common import in_flag_terms
from .evaluate import add_ablation, add_compare, add_curves, add_evaluate, add_gates
from .fuse import add_fuse
from .tools import add_bench, add_split
from .train import add_train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fusion_core", description="DGD-Fusion: multimodal image fusion")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_fuse, add_train, add_evaluate, add_split, add_bench, add_ablation, add_compare, add_curves,
                add_gates):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; a known error is one ``error:`` line, in the flags' terms.

    Exit status 2: refused before the work (a bad input, flag, checkpoint, config or output path: ValueError,
    CheckpointError, ImageLoadError, an OSError naming a file). Exit status 1: the work stopped part-way
    because an output could not be written (a full disk, a lost permission: OutputWriteError); what was
    written before is complete, and the old file at the path that failed is untouched. Anything else is a
    bug and keeps its traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OutputWriteError, FolderRunStopped) as error:
        return _refuse(str(error), status=1)
    except (ImageLoadError, CheckpointError, ValueError) as error:
        return _refuse(str(error))
    except OSError as error:
        if error.filename is None:
            raise
        return _refuse(f"{error.strerror}: {error.filename}")


def _refuse(message: str, status: int = 2) -> int:
    """Print ``message`` as one ``error:`` line (a multi-line one, e.g. torch's shape list, joined) in the flags'
    terms, and return ``status``."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print("error: " + in_flag_terms(line), file=sys.stderr)
    return status
