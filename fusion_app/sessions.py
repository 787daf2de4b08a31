"""Per-session output folders: ``ROOT/SESSION/KIND/REQUEST``, replaced by the session's next request of a kind,
removed when the session ends, swept when a session stays idle for ``KEEP_OUTPUTS_SECONDS``.

The app's own folders only. Gradio copies every file a handler returns into its cache before it is shown, and
``gr.Blocks(delete_cache=...)`` sweeps that cache; the app never reads or cleans Gradio's cache itself. No gradio
here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from fusion_app import limits


def session_folder_name(session: str) -> str:
    """A folder name for a Gradio session: its hash is sent by the browser, so it is hashed again, never used as
    a path."""
    return hashlib.sha256(session.encode()).hexdigest()[:24]


def prune(folder: Path, max_age: float) -> None:
    """Delete the sub-folders of ``folder`` not touched for ``max_age`` seconds."""
    if folder.is_dir():
        for old in folder.iterdir():
            if old.is_dir() and time.time() - old.stat().st_mtime > max_age:
                shutil.rmtree(old, ignore_errors=True)


class SessionFolders:
    """The output folders of every session under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, session: str) -> Path:
        return self.root / session_folder_name(session)

    def request_dir(self, session: str, kind: str) -> Path:
        """A new folder for one request's outputs. The session's earlier ones of this ``kind`` go: their files
        were copied into Gradio's cache when they were shown. So do the folders of sessions idle for
        ``KEEP_OUTPUTS_SECONDS``, which ended without saying so."""
        folder = self.folder(session)
        shutil.rmtree(folder / kind, ignore_errors=True)
        (folder / kind).mkdir(parents=True, exist_ok=True)
        os.utime(folder)  # the session's last activity, which prune reads
        prune(self.root, limits.KEEP_OUTPUTS_SECONDS)
        return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=folder / kind))

    def end(self, session: str) -> None:
        """A session ended (its tab closed): its outputs go."""
        shutil.rmtree(self.folder(session), ignore_errors=True)
