"""The fusion task of a pair, read from its file and folder names and a DICOM's modality.

The command line picks the checkpoint trained for a pair's task as the app's task menu does: a medical pair
(MRI with CT, PET or SPECT) goes to ``dgd-medical``, anything else to ``dgd-general``. The names are split into
words at every character that is not a letter or a digit, so ``MRI.png``, ``case3_PET.dcm`` and a pair folder
``MRI/`` + ``SPECT/`` read as medical, ``ir/`` + ``vi/`` or ``FLIR_infrared.png`` as infrared + visible; a
DICOM whose Modality is MR, CT, PT or NM is medical whatever its name. Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TASK_CHECKPOINTS = {"ivf": "dgd-general", "medical": "dgd-medical"}  # task -> bundled checkpoint trained for it
TASK_NAMES = {"ivf": "infrared + visible", "medical": "medical"}
MEDICAL_WORDS = frozenset({"mri", "mr", "ct", "pet", "spect", "t1", "t2", "flair"})
IVF_WORDS = frozenset({"ir", "vi", "vis", "infrared", "visible", "thermal", "lwir", "nir"})
MEDICAL_MODALITIES = frozenset({"MR", "CT", "PT", "NM"})  # DICOM (0008,0060): MR, CT, PET, SPECT (nuclear)


@dataclass(frozen=True)
class TaskGuess:
    """A pair's task ("ivf" or "medical") and, in words, what it was read from."""

    task: str
    reason: str


def _words(path: str | Path) -> list[str]:
    """The words of a file's name and of its folder's name, lower case, in order."""
    path = Path(path)
    return [w for part in (path.parent.name, path.stem) for w in re.split(r"[^a-z0-9]+", part.lower()) if w]


def guess_task(a: str | Path, b: str | Path, modalities: Sequence[str] = ()) -> TaskGuess:
    """The task of the pair of files ``a`` and ``b`` (DICOM ``modalities`` of either, if any).

    Medical when a DICOM modality is medical, or when the names hold a medical word (MRI, CT, PET, SPECT, ...)
    and no infrared/visible one; otherwise infrared + visible, the general checkpoint's task.
    """
    medical = sorted({m for m in modalities if m in MEDICAL_MODALITIES})
    if medical:
        return TaskGuess("medical", f"DICOM modality {', '.join(medical)}")
    words = _words(a) + _words(b)
    named = list(dict.fromkeys(w.upper() for w in words if w in MEDICAL_WORDS))
    if named and not any(w in IVF_WORDS for w in words):
        return TaskGuess("medical", f"{', '.join(named)} in the file names")
    return TaskGuess("ivf", "no medical modality or name found")
