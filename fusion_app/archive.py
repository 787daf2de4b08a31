"""Zip archives in and out of the app: uploaded zips of pairs unpacked safely, checkpoints zipped for download.

A zip of pairs may also bring other methods' fused images, in folders ``fused/NAME/`` beside the two source
folders (one image per pair, named like it); ``external_methods`` finds them for the Evaluate tab.

An upload is untrusted: every entry is checked before anything is written (no absolute paths, no '..', no
symbolic links, no entry that names no file ('.') or is both a file and a folder, a cap on the entry count and
on the declared uncompressed size, which ``zipfile`` enforces while reading, so a lying header cannot unpack
more, no encrypted entry, no name longer or deeper than a file system takes); an entry whose data fails its
checks while unpacking is named in the message. Messages quote entry names as the zip spells them (shortened
when long): whoever shows a message escapes it, as any text that comes from an upload.
"""

from __future__ import annotations

import re
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from fusion_core import find_pairs

MAX_ZIP_FILES = 2000
MAX_ZIP_BYTES = 512 * 2**20
MAX_NAME_BYTES = 255  # one file or folder name, as ext4, APFS and NTFS take it
MAX_PATH_CHARS = 1024  # a whole entry path
MAX_DEPTH = 32  # folders inside the zip
SHOWN_NAME_CHARS = 60  # an entry name longer than this is shortened in messages
FUSED_FOLDER = "fused"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "MODEL_CARD.md", "train_state.json", "train_log.jsonl")


def _parts(member: zipfile.ZipInfo) -> tuple[str, ...]:
    """The path of an entry inside the folder it unpacks to ('.' parts dropped)."""
    return PurePosixPath(member.filename.replace("\\", "/")).parts


def shown(name: str) -> str:
    """An entry name as messages quote it: ``repr`` (control characters visible), its middle cut when long."""
    if len(name) > SHOWN_NAME_CHARS:
        half = SHOWN_NAME_CHARS // 2
        name = f"{name[:half]}...{name[-half:]}"
    return repr(name)


def _check_name(member: zipfile.ZipInfo) -> None:
    """Refuse an encrypted entry and a name no file system takes: too long a name or path, too deep a path."""
    parts = _parts(member)
    if member.flag_bits & 0x1:
        raise ValueError(f"the zip entry {shown(member.filename)} is encrypted; zip the files again without a "
                         "password")
    if len(member.filename) > MAX_PATH_CHARS:
        raise ValueError(f"the zip entry {shown(member.filename)} has a path of {len(member.filename)} "
                         f"characters, more than the limit of {MAX_PATH_CHARS}")
    if len(parts) > MAX_DEPTH:
        raise ValueError(f"the zip entry {shown(member.filename)} is {len(parts)} folders deep, more than the "
                         f"limit of {MAX_DEPTH}")
    longest = max(parts, key=lambda part: len(part.encode("utf-8")), default="")
    if len(longest.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"the zip entry {shown(member.filename)} has a name of {len(longest.encode('utf-8'))} "
                         f"bytes, more than the {MAX_NAME_BYTES} a file system takes")


def _check_members(members: list[zipfile.ZipInfo], max_files: int, max_bytes: int) -> None:
    """Refuse absolute paths, '..' parts, symbolic links, entries that name no file, encrypted entries, names
    too long or too deep, a name used both for a file and for a folder, too many entries and too many bytes."""
    if not members:
        raise ValueError("the zip is empty")
    if len(members) > max_files:
        raise ValueError(f"the zip has {len(members)} entries, more than the limit of {max_files}")
    total = sum(m.file_size for m in members)
    if total > max_bytes:
        raise ValueError(f"the zip unpacks to {total / 2**20:.0f} MiB, more than the limit of "
                         f"{max_bytes / 2**20:.0f} MiB")
    for member in members:
        name = member.filename.replace("\\", "/")
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
            raise ValueError(f"the zip entry {shown(member.filename)} has an absolute path")
        if ".." in PurePosixPath(name).parts:
            raise ValueError(f"the zip entry {shown(member.filename)} points outside the folder ('..')")
        if (member.external_attr >> 16) & 0o170000 == 0o120000:
            raise ValueError(f"the zip entry {shown(member.filename)} is a symbolic link")
        if not _parts(member) and not member.is_dir():
            raise ValueError(f"the zip entry {shown(member.filename)} names no file")
        _check_name(member)
    files = {_parts(m) for m in members if not m.is_dir()}
    folders = {_parts(m)[:i] for m in members for i in range(1, len(_parts(m)) + (m.is_dir()))}
    clash = min(files & folders, default=None)
    if clash is not None:
        raise ValueError(f"the zip holds both a file and a folder named {'/'.join(clash)!r}")


def unpack_zip(path: str, dest: Path, max_files: int = MAX_ZIP_FILES, max_bytes: int = MAX_ZIP_BYTES) -> Path:
    """Unpack an uploaded zip of pairs into ``dest`` safely; returns the folder that holds the pairs.

    Every entry is checked before anything is written (``_check_members``); macOS resource forks are skipped.
    The pairs may sit at the top of the zip or inside one folder (a zipped folder).
    Raises:
        ValueError: an unreadable or unsafe zip, or one without a pair layout.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise ValueError("the upload is not a readable zip file") from None
    with archive:
        members = [m for m in archive.infolist() if not m.filename.replace("\\", "/").startswith("__MACOSX/")]
        _check_members(members, max_files, max_bytes)
        for member in members:
            _unpack_member(archive, member, dest.joinpath(*_parts(member)))
    folders = [p for p in dest.iterdir() if p.is_dir()]
    return folders[0] if len(folders) == 1 and not _has_layout(dest) else dest


def _unpack_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path) -> None:
    """One checked entry written to ``target``; damaged data (a wrong CRC or size) named as the entry's."""
    if member.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with archive.open(member) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
        raise ValueError(f"the zip entry {shown(member.filename)} cannot be unpacked ({error}); zip the files "
                         "again") from None
    except OSError as error:
        raise ValueError(f"the zip entry {shown(member.filename)} cannot be written on the server "
                         f"({error.strerror or error})") from None


def _has_layout(folder: Path) -> bool:
    try:
        find_pairs(folder)
    except ValueError:
        return False
    return True


def external_methods(root: Path) -> dict[str, Path]:
    """The other methods an unpacked zip brings: name -> its folder, one per sub-folder of ``root/fused/``
    (the folder name matched case-insensitively; hidden folders skipped), sorted by name."""
    fused = next((p for p in root.iterdir() if p.is_dir() and p.name.lower() == FUSED_FOLDER), None)
    if fused is None:
        return {}
    return {p.name: p for p in sorted(fused.iterdir()) if p.is_dir() and not p.name.startswith((".", "__"))}


def zip_checkpoint(folder: Path, name: str) -> Path:
    """The checkpoint files of ``folder`` as ``<name>.zip`` beside it (weights, config, card, training state)."""
    path = folder.parent / f"{name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in CHECKPOINT_FILES:
            if (folder / file).is_file():
                archive.write(folder / file, f"{name}/{file}")
    return path
