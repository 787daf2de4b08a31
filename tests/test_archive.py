"""Uploaded zips a file system or zipfile cannot take are refused in plain words, naming the entry."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from fusion_app.archive import MAX_DEPTH, MAX_NAME_BYTES, MAX_PATH_CHARS, shown, unpack_zip


def zip_of(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def encrypted_zip(path: Path, name: str) -> Path:
    """A zip whose entry says it is encrypted (bit 0 of its flags, in the local and the central header)."""
    data = bytearray(zip_of(path, {name: b"pixels"}).read_bytes())
    local, central = data.index(b"PK\x03\x04"), data.rindex(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    path.write_bytes(bytes(data))
    return path


def test_an_encrypted_entry_is_named_and_nothing_is_written(tmp_path):
    archive = encrypted_zip(tmp_path / "secret.zip", "MRI/a.png")
    with pytest.raises(ValueError, match=r"entry 'MRI/a.png' is encrypted; zip the files again without a password"):
        unpack_zip(str(archive), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, message", [
    ("MRI/" + "a" * 300 + ".png", f"a name of 304 bytes, more than the {MAX_NAME_BYTES}"),
    ("/".join(["d"] * (MAX_DEPTH + 1)) + ".png", f"{MAX_DEPTH + 1} folders deep, more than the limit of {MAX_DEPTH}"),
    ("/".join(["folder"] * 200) + ".png", f"more than the limit of {MAX_PATH_CHARS}"),
    ("MRI/" + "é" * 150 + ".png", f"a name of 304 bytes, more than the {MAX_NAME_BYTES}"),
])
def test_names_no_file_system_takes_are_refused_before_anything_is_written(tmp_path, name, message):
    with pytest.raises(ValueError, match=message) as caught:
        unpack_zip(str(zip_of(tmp_path / "upload.zip", {name: b"x"})), tmp_path / "out")
    assert shown(name) in str(caught.value) and len(str(caught.value)) < 200
    assert not (tmp_path / "out").exists()


def test_names_within_the_limits_unpack(tmp_path):
    name = "/".join(["d"] * (MAX_DEPTH - 1)) + "/" + "a" * (MAX_NAME_BYTES - 4) + ".png"
    unpack_zip(str(zip_of(tmp_path / "upload.zip", {name: b"x"})), tmp_path / "out")
    assert (tmp_path / "out").joinpath(*name.split("/")).read_bytes() == b"x"


def test_shown_names_are_quoted_and_shortened_in_the_middle():
    assert shown("MRI/a.png") == "'MRI/a.png'"
    long = "start" + "x" * 200 + "end.png"
    assert shown(long).startswith("'start") and shown(long).endswith("end.png'") and "..." in shown(long)
    assert len(shown(long)) < 70
    assert shown("a\nb") == "'a\\nb'"


def test_an_entry_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    archive = zip_of(tmp_path / "upload.zip", {"MRI/a.png": b"x"})

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("fusion_app.archive.shutil.copyfileobj", full)
    with pytest.raises(ValueError, match="entry 'MRI/a.png' cannot be written on the server .No space left"):
        unpack_zip(str(archive), tmp_path / "out")
