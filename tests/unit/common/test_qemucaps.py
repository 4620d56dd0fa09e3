"""The node's QEMU capabilities files: what passes as one, how a directory of them is read (no symlinks,
bounded) and written (atomically, kept or replaced)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podvirt_common import qemucaps

pytestmark = pytest.mark.unit

NAME = "a" * 64 + ".xml"
OTHER = "b" * 64 + ".xml"


def test_check_takes_named_xml_texts_and_names_what_is_wrong() -> None:
    assert qemucaps.check({NAME: "<qemuCaps/>"}) == {NAME: "<qemuCaps/>"}
    assert qemucaps.check({}) == {}
    bad = [
        (["x"], "must be an object"),
        ({"../../etc/passwd": "x"}, "'../../etc/passwd' is not a capabilities file name"),
        ({"A" * 64 + ".xml": "x"}, "is not a capabilities file name"),
        ({NAME: 5}, f"qemuCapabilities.{NAME} must be XML text"),
        ({NAME: "x" * (qemucaps.MAX_FILE_BYTES + 1)}, "at most"),
        ({f"{i:064x}.xml": "x" for i in range(qemucaps.MAX_FILES + 1)}, f"at most {qemucaps.MAX_FILES}"),
    ]
    for files, message in bad:
        with pytest.raises(qemucaps.CapabilitiesError, match=message.replace(".", r"\.").replace("(", r"\(")):
            qemucaps.check(files)


def test_read_dir_takes_regular_files_only_and_ignores_the_rest(tmp_path: Path) -> None:
    (tmp_path / NAME).write_text("<qemuCaps/>")
    secret = tmp_path / "secret"
    secret.write_text("not for launchers")
    (tmp_path / OTHER).symlink_to(secret)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ("c" * 64 + ".xml")).mkdir()
    (tmp_path / ("d" * 64 + ".xml")).write_bytes(b"x" * (qemucaps.MAX_FILE_BYTES + 1))
    assert qemucaps.read_dir(tmp_path) == {NAME: "<qemuCaps/>"}
    assert qemucaps.read_dir(tmp_path / "absent") == {}


def test_write_files_keeps_or_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    assert qemucaps.write_files(target, {NAME: "<first/>"}, replace=False) == [NAME]
    assert qemucaps.write_files(target, {NAME: "<second/>", OTHER: "<other/>"}, replace=False) == [OTHER]
    assert (target / NAME).read_text() == "<first/>", "a file libvirt already has is kept"
    assert qemucaps.write_files(target, {NAME: "<second/>"}, replace=True) == [NAME]
    assert (target / NAME).read_text() == "<second/>"
    assert sorted(os.listdir(target)) == sorted([NAME, OTHER])
    assert (target / NAME).stat().st_mode & 0o777 == 0o644


def test_write_files_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    target.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (target / NAME).symlink_to(victim)
    qemucaps.write_files(target, {NAME: "<caps/>"}, replace=True)
    assert victim.read_text() == "untouched"
    assert not (target / NAME).is_symlink() and (target / NAME).read_text() == "<caps/>"
