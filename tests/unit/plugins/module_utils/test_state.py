# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import os

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils import state


def test_save_load_roundtrip_and_no_temp_left(tmp_path):
    path = str(tmp_path / "d" / "pods.json")
    state.save(path, {"pods": {"a": {"ips": ["10.0.0.2/24"]}}})
    assert state.load(path) == {"pods": {"a": {"ips": ["10.0.0.2/24"]}}}
    assert os.listdir(tmp_path / "d") == ["pods.json"]


def test_load_missing_is_empty(tmp_path):
    assert state.load(str(tmp_path / "nope.json")) == {}


@pytest.mark.parametrize("text, why", [
    ("{half", "not JSON"),
    ("", "not JSON"),
    ("[1, 2]", "a JSON list, not an object"),
    ("null", "a JSON NoneType, not an object"),
    (b"\xff\xfe", "cannot be read"),
])
def test_load_corrupt_is_an_error_naming_file_and_fix(tmp_path, text, why):
    bad = tmp_path / "node.json"
    if isinstance(text, bytes):
        bad.write_bytes(text)
    else:
        bad.write_text(text)
    with pytest.raises(state.StateError) as exc:
        state.load(str(bad))
    msg = str(exc.value)
    assert str(bad) in msg and why in msg and "move it away" in msg


def test_load_or_fail_fails_the_module(tmp_path):
    bad = tmp_path / "peers.json"
    bad.write_text("{")

    class Module:
        def fail_json(self, **kw):
            raise RuntimeError(kw["msg"])

    with pytest.raises(RuntimeError, match="peers.json is corrupt"):
        state.load_or_fail(Module(), str(bad))
    assert state.load_or_fail(Module(), str(tmp_path / "none.json")) == {}


def test_write_atomic_fsyncs_file_before_rename_and_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        events.append(("rename", None))
        return real_replace(a, b)

    monkeypatch.setattr(state.os, "fsync", fsync)
    monkeypatch.setattr(state.os, "replace", replace)
    path = str(tmp_path / "node.json")
    assert state.write_atomic(path, "{}\n") is True
    assert events == [("fsync", False), ("rename", None), ("fsync", True)]
    events.clear()
    assert state.write_atomic(path, "{}\n") is False  # unchanged: not rewritten
    assert events == []


def test_remove_and_remove_dir_if_empty(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{}")
    state.remove(str(path))
    state.remove(str(path))
    state.remove_dir_if_empty(str(tmp_path))
    assert not tmp_path.exists()


def test_read_text_is_the_text_none_when_missing_empty_when_unreadable(tmp_path):
    path = tmp_path / "conf"
    assert state.read_text(str(path)) is None
    path.write_text("one\n", encoding="utf-8")
    assert state.read_text(str(path)) == "one\n"
    path.write_bytes(b"\xff\xfe")
    assert state.read_text(str(path)) == ""  # not UTF-8: exists, never a traceback
    assert state.read_text(str(tmp_path)) == ""  # a directory
