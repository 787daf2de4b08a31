"""Atomic output (fusion_core.imaging.write): a write that fails leaves the old file as it was, and no temporary file.

Failures are simulated by making ``os.write``, ``os.fsync`` or ``os.replace`` raise, and once for real on a small
tmpfs filled to the last page (Linux, as root; skipped elsewhere, with the reason).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fusion_core.imaging import (
    OutputWriteError,
    read_image,
    to_uint8,
    write_atomically,
    write_dicom_secondary_capture,
    write_fused,
    write_png,
    write_tiff16,
)

NOISE = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)  # incompressible: 12 KB as PNG
WRITERS = {
    "png": lambda path: write_png(path, NOISE),
    "tif": lambda path: write_tiff16(path, NOISE),
    "dcm": lambda path: write_dicom_secondary_capture(path, NOISE),
    "fused.tif": lambda path: write_fused(path, NOISE[..., 0], NOISE),
}
MESSAGES = {errno.ENOSPC: "not enough disk space to write", errno.EACCES: "no permission to write"}


def _old_file(folder, name: str) -> bytes:
    """A valid image at ``folder/name`` (PNG bytes whatever the suffix: only its bytes matter); its content."""
    write_png(folder / name, np.full((8, 8), 0.5, np.float32))
    return (folder / name).read_bytes()


def _failing(code: int, seen: list[list[str]] | None = None, folder=None):
    def fail(*args, **kwargs):
        if seen is not None:
            seen.append(sorted(os.listdir(folder)))
        raise OSError(code, os.strerror(code))
    return fail


def test_write_atomically_replaces_the_content_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "table.csv"
    write_atomically(path, b"old\n")
    write_atomically(str(path), b"a,b\n1,2\n")
    assert path.read_bytes() == b"a,b\n1,2\n"
    assert os.listdir(tmp_path) == ["table.csv"]


@pytest.mark.parametrize("code", sorted(MESSAGES))
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_failed_write_keeps_the_old_file_and_says_why(tmp_path, monkeypatch, kind, code):
    name = f"out.{kind.rsplit('.', 1)[-1]}"
    old = _old_file(tmp_path, name)
    seen: list[list[str]] = []
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", _failing(code, seen, tmp_path))
        with pytest.raises(OutputWriteError) as caught:
            WRITERS[kind](tmp_path / name)
    error = caught.value
    assert isinstance(error, OSError) and error.errno == code and error.filename == str(tmp_path / name)
    assert str(error).startswith(f"{MESSAGES[code]} {tmp_path / name}") and "\n" not in str(error)
    assert (tmp_path / name).read_bytes() == old
    assert os.listdir(tmp_path) == [name]
    (temporary,) = set(seen[0]) - {name}  # while writing: a hidden name made of the target's own and random
    assert temporary.startswith(f".{name}.tmp-") and len(temporary) == len(name) + 14


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failures_after_the_bytes_are_written_clean_up_too(tmp_path, monkeypatch, failing):
    old = _old_file(tmp_path, "out.tif")
    with monkeypatch.context() as patch:
        patch.setattr(os, failing, _failing(errno.ENOSPC if failing == "fsync" else errno.EACCES))
        with pytest.raises(OutputWriteError, match="disk space" if failing == "fsync" else "permission"):
            write_tiff16(tmp_path / "out.tif", NOISE)
    assert (tmp_path / "out.tif").read_bytes() == old
    assert os.listdir(tmp_path) == ["out.tif"]


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    old = _old_file(tmp_path, "out.png")

    def interrupt(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", interrupt)
        with pytest.raises(KeyboardInterrupt):
            write_png(tmp_path / "out.png", NOISE)
    assert (tmp_path / "out.png").read_bytes() == old
    assert os.listdir(tmp_path) == ["out.png"]


def test_other_failures_name_the_file_and_the_reason(tmp_path):
    with pytest.raises(OutputWriteError, match="its folder does not exist"):
        write_png(tmp_path / "missing" / "out.png", NOISE)
    with pytest.raises(OutputWriteError, match="it is a folder"):
        write_atomically(tmp_path, b"x")
    assert str(OutputWriteError(errno.EIO, "Input/output error", "out.png")) == (
        "could not write out.png (Input/output error)")


def test_permission_bits_are_kept_and_a_read_only_file_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    _old_file(tmp_path, "out.png")
    path.chmod(0o640)
    write_png(path, NOISE)
    assert path.stat().st_mode & 0o777 == 0o640
    old = path.read_bytes()
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # as a file without write permission reads
    with pytest.raises(OutputWriteError, match="no permission to write"):
        write_png(path, NOISE[..., 0])
    assert path.read_bytes() == old


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges on Windows")
def test_a_symbolic_link_is_followed(tmp_path):
    (tmp_path / "real.png").write_bytes(b"")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    write_png(tmp_path / "link.png", NOISE)
    assert (tmp_path / "link.png").is_symlink()
    assert np.array_equal(to_uint8(read_image(tmp_path / "real.png").pixels), to_uint8(NOISE))


# ---------------------------------------------------------------- a real full disk


@pytest.fixture
def full_disk(tmp_path):
    """A 512 KiB tmpfs mounted at ``tmp_path / "disk"``, unmounted after the test."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs Linux and root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _fill(folder) -> None:
    """Write ``folder/filler`` until the file system has no room left."""
    with open(folder / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    with pytest.raises(OSError):  # not a page left
        (folder / "probe").write_bytes(b"x")
    (folder / "probe").unlink(missing_ok=True)


@pytest.mark.parametrize("kind", ["png", "tif"])
def test_a_full_file_system_keeps_the_old_file(full_disk, kind):
    name = f"out.{kind}"
    old = _old_file(full_disk, name)
    _fill(full_disk)
    with pytest.raises(OutputWriteError) as caught:
        WRITERS[kind](full_disk / name)
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value).startswith(f"not enough disk space to write {full_disk / name}")
    assert (full_disk / name).read_bytes() == old
    assert sorted(os.listdir(full_disk)) == ["filler", name]
    (full_disk / "filler").unlink()  # with room again, the same write succeeds
    WRITERS[kind](full_disk / name)
    assert read_image(full_disk / name).pixels.shape == NOISE.shape
