"""Per-session folders, in two trees: ``ROOT/outputs/SESSION/KIND/REQUEST`` for a request's outputs, replaced by
the session's next request of a kind, and ``ROOT/uploads/SESSION`` for its uploads under neutral names; both
removed when the session ends, swept when a session stays idle for ``KEEP_OUTPUTS_SECONDS``.

Outputs: the app serves them from ``ROOT/outputs`` as it is (a static path of Gradio's, set by app.py), so Gradio
keeps no copy of them in its cache, and removing a session's folder removes them for good. Every name in that
tree is made by the app (hashed session, kind, a fresh folder per request, fixed file names), and no upload is
ever kept there: an upload is in the other tree, which is never served.

Uploads: Gradio hands a handler the path of an uploaded file in its cache, a folder named after the file's
content holding the file under the name it was uploaded with (a DICOM file is often named after its patient).
``SessionFolders.upload`` copies it into the session's folder under a neutral name, removes Gradio's copy and
its folder, and remembers the path for the session's later events, which send the same path again: no file on
disk keeps the upload's name, which only the session's memory holds. Gradio keeps its copies of the bundled
examples in its cache too, for every session: a file identical to one of ``examples`` stays where it is. The app
owns Gradio's cache folder (the ``GRADIO_TEMP_DIR`` it sets before gradio is imported), so ``sweep_cache`` may
also remove the empty files and folders Gradio leaves at its top (an empty temporary file per uploaded file and
event; the folders of files that ``delete_cache`` removed). No gradio here.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fusion_app import limits


class UploadGone(ValueError):
    """An upload the server no longer holds (its session ended or was idle too long)."""


@dataclass(frozen=True)
class Upload:
    """An uploaded file in its session's folder under a neutral ``path``; ``name`` is the name it was uploaded
    with, for messages and the name of a download (held in memory only)."""

    path: Path
    name: str


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


def sweep_cache(cache: Path, max_age: float) -> None:
    """Remove the empty files and empty folders at the top of ``cache`` untouched for ``max_age`` seconds: what
    Gradio leaves behind there, never a file with data."""
    if not cache.is_dir():
        return
    for entry in cache.iterdir():
        try:
            status = entry.lstat()
            if time.time() - status.st_mtime <= max_age:
                continue
            if entry.is_file() and not entry.is_symlink() and status.st_size == 0:
                entry.unlink()
            elif entry.is_dir() and not entry.is_symlink():
                entry.rmdir()  # only when empty
        except OSError:
            continue


def neutral_name(name: str) -> str:
    """A name that says nothing of the upload's: random, with its extension when that is a plain one (readers
    may go by it)."""
    suffix = Path(name).suffix.lower()
    plain = re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) is not None
    return f"upload-{secrets.token_hex(8)}{suffix if plain else ''}"


class SessionFolders:
    """The folders of every session under ``root``; ``cache`` is Gradio's cache, whose uploads are taken in,
    except its copies of the files under ``examples``."""

    def __init__(self, root: Path, cache: Path | None = None, examples: Path | None = None):
        self.root = Path(root)
        self.cache = Path(cache) if cache else None
        self.examples = sorted(p for p in Path(examples).rglob("*") if p.is_file()) if examples else []
        self._uploads: dict[str, dict[str, Upload]] = {}  # session folder -> Gradio's path -> the session's copy
        self._lock = threading.Lock()

    @property
    def outputs(self) -> Path:
        """The tree of every session's outputs, which the app serves as it is (never an upload in it)."""
        return self.root / "outputs"

    @property
    def uploads(self) -> Path:
        """The tree of every session's uploads, never served."""
        return self.root / "uploads"

    def folder(self, session: str) -> Path:
        """The session's folder of outputs."""
        return self.outputs / session_folder_name(session)

    def upload_folder(self, session: str) -> Path:
        """The session's folder of uploads."""
        return self.uploads / session_folder_name(session)

    def request_dir(self, session: str, kind: str) -> Path:
        """A new folder for one request's outputs. The session's earlier ones of this ``kind`` go: what they
        showed is replaced by this request's. So do the folders of sessions idle for ``KEEP_OUTPUTS_SECONDS``,
        which ended without saying so."""
        folder = self.folder(session)
        shutil.rmtree(folder / kind, ignore_errors=True)
        (folder / kind).mkdir(parents=True, exist_ok=True)
        self._touch(session)
        self.sweep()
        return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=folder / kind))

    def scratch_dir(self, session: str) -> Path:
        """A new folder for a request's work on an upload (an unpacked zip, images named after its entries), in
        the session's folder of uploads, never served; the request removes it when done."""
        folder = self.upload_folder(session)
        folder.mkdir(parents=True, exist_ok=True)
        self._touch(session)
        return Path(tempfile.mkdtemp(prefix="work-", dir=folder))

    def upload(self, session: str, path: str | Path) -> Upload:
        """The session's copy of the file Gradio gave a handler at ``path``. A file in Gradio's cache is copied
        into the session's folder under a neutral name the first time, and Gradio's copy and its folder go; a
        file elsewhere, or Gradio's copy of a bundled example, is used where it is.

        Raises:
            UploadGone: the file is gone and the session holds no copy of it.
        """
        path = Path(path)
        if not self._in_cache(path) or self._is_example(path):
            return Upload(path, path.name)
        key = session_folder_name(session)
        with self._lock:
            upload = self._uploads.get(key, {}).get(str(path))
            if upload is None or not upload.path.is_file():
                upload = self._take(session, path)
                self._uploads.setdefault(key, {})[str(path)] = upload
            self._remove_from_cache(path)  # also when the same file was uploaded again
        return upload

    def end(self, session: str) -> None:
        """A session ended (its tab closed): its outputs and uploads go."""
        with self._lock:
            self._uploads.pop(session_folder_name(session), None)
        shutil.rmtree(self.folder(session), ignore_errors=True)
        shutil.rmtree(self.upload_folder(session), ignore_errors=True)

    def sweep(self) -> None:
        """The folders of sessions idle for ``KEEP_OUTPUTS_SECONDS`` go (with what the app remembers of their
        uploads), and the empty leftovers at the top of Gradio's cache older than ``CACHE_LEFTOVER_SECONDS``."""
        prune(self.outputs, limits.KEEP_OUTPUTS_SECONDS)
        prune(self.uploads, limits.KEEP_OUTPUTS_SECONDS)
        with self._lock:
            for key in [k for k in self._uploads if not (self.uploads / k).is_dir()]:
                del self._uploads[key]
        if self.cache is not None:
            sweep_cache(self.cache, limits.CACHE_LEFTOVER_SECONDS)

    def sweep_every(self, seconds: float) -> threading.Thread:
        """``sweep`` in a background thread every ``seconds``, for the sessions that end without saying so."""

        def sweeping() -> None:
            while True:
                time.sleep(seconds)
                self.sweep()

        thread = threading.Thread(target=sweeping, name="session-sweeper", daemon=True)
        thread.start()
        return thread

    def _take(self, session: str, path: Path) -> Upload:
        """A copy of Gradio's file at ``path`` (or of another session's copy of it) in the session's folder."""
        source = path if path.is_file() else self._copy_elsewhere(str(path))
        if source is None:
            raise UploadGone(f"The uploaded file {path.name} is no longer on the server (uploads are deleted when "
                             "a session ends or stays idle); upload it again.")
        folder = self.upload_folder(session)
        folder.mkdir(parents=True, exist_ok=True)
        self._touch(session)
        upload = Upload(folder / neutral_name(path.name), path.name)
        shutil.copyfile(source, upload.path)
        return upload

    def _touch(self, session: str) -> None:
        """Mark the session's folders as active now (``prune`` reads their times): its uploads stay as long as
        it makes requests, and its outputs as long as it uploads."""
        for folder in (self.folder(session), self.upload_folder(session)):
            if folder.is_dir():
                os.utime(folder)

    def _in_cache(self, path: Path) -> bool:
        return self.cache is not None and path.resolve().is_relative_to(self.cache.resolve())

    def _is_example(self, path: Path) -> bool:
        """Whether ``path`` holds a bundled example (Gradio's copy of it, which every session's examples use)."""
        if not path.is_file():
            return False
        size = path.stat().st_size
        return any(e.stat().st_size == size and filecmp.cmp(e, path, shallow=False) for e in self.examples)

    def _copy_elsewhere(self, path: str) -> Path | None:
        """Another session's copy of the file Gradio kept at ``path``: Gradio names a file's folder after its
        content, so one path is one content, uploaded by two sessions at once."""
        copies = (uploads[path].path for uploads in self._uploads.values() if path in uploads)
        return next((copy for copy in copies if copy.is_file()), None)

    def _remove_from_cache(self, path: Path) -> None:
        """Gradio's copy of an upload and, once empty, the folder it was put in."""
        try:
            path.unlink(missing_ok=True)
            if path.parent.resolve() != self.cache.resolve():
                path.parent.rmdir()
        except OSError:  # already gone, or the folder holds another file
            pass
