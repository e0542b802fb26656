# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import os

from ansible_collections.flatnet.cluster.plugins.module_utils import state


def test_save_load_roundtrip_and_no_temp_left(tmp_path):
    path = str(tmp_path / "d" / "pods.json")
    state.save(path, {"pods": {"a": {"ips": ["10.0.0.2/24"]}}})
    assert state.load(path) == {"pods": {"a": {"ips": ["10.0.0.2/24"]}}}
    assert os.listdir(tmp_path / "d") == ["pods.json"]


def test_load_missing_or_broken_is_empty(tmp_path):
    assert state.load(str(tmp_path / "nope.json")) == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{half")
    assert state.load(str(bad)) == {}


def test_remove_and_remove_dir_if_empty(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{}")
    state.remove(str(path))
    state.remove(str(path))
    state.remove_dir_if_empty(str(tmp_path))
    assert not tmp_path.exists()
