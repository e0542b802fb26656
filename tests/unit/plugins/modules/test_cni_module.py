# SPDX-License-Identifier: GPL-3.0-or-later
"""The cni module on a scratch tree: ownership, idempotence, check mode, teardown, preflight."""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest

from ansible_collections.flatnet.cluster.tests.unit.compat import patch_module_args

from ansible_collections.flatnet.cluster.plugins.module_utils import cni_config as C
from ansible_collections.flatnet.cluster.plugins.modules import cni as cni_module

RANGES = [[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.128", "rangeEnd": "10.244.1.254",
            "gateway": "10.244.1.1"}]]


@pytest.fixture
def tree(tmp_path):
    plugins = tmp_path / "usr-lib-cni"
    plugins.mkdir()
    for name in C.PLUGINS:
        exe = plugins / name
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    for d in ("net.d", "networks", "results", "state", "run"):
        (tmp_path / d).mkdir()
    return tmp_path


def args(tree, **kw):
    base = {
        "bridge": "cni0", "mtu": 1450, "ranges": RANGES, "cluster_cidrs": ["10.244.0.0/16"],
        "pod_cidrs": ["10.244.1.0/24"], "conf_dir": str(tree / "net.d"), "data_dir": str(tree / "networks"),
        "cache_dir": str(tree / "results"), "subnet_env": str(tree / "run" / "subnet.env"),
        "plugin_dirs": [str(tree / "opt-cni-bin"), str(tree / "usr-lib-cni")], "state_dir": str(tree / "state"),
    }
    base.update(kw)
    return base


def run(a, capsys, check_mode=False, netns=None):
    with patch_module_args(dict(a, _ansible_check_mode=check_mode, _ansible_diff=True)), \
            mock.patch.object(cni_module, "netns_addresses", return_value=netns or {}):
        with pytest.raises(SystemExit):
            cni_module.main()
    return json.loads(capsys.readouterr().out)


def test_present_writes_then_unchanged(tree, capsys):
    out = run(args(tree), capsys, check_mode=True)
    assert out["changed"] and not (tree / "net.d" / C.CONFLIST_NAME).exists()
    assert '"rangeStart": "10.244.1.128"' in out["diff"]["after"]
    out = run(args(tree), capsys)
    assert out["changed"] and out["plugin_dir"] == str(tree / "usr-lib-cni")
    assert out["missing_plugins"] == {str(tree / "opt-cni-bin"): list(C.PLUGINS)}
    doc = json.loads((tree / "net.d" / C.CONFLIST_NAME).read_text())
    assert doc == C.render_conflist("flatnet", "cni0", 1450, RANGES)
    assert (tree / "run" / "subnet.env").read_text().startswith("FLANNEL_NETWORK=10.244.0.0/16\n")
    out = run(args(tree), capsys)
    assert not out["changed"] and out["diff"] == {"before": "", "after": ""}
    # a new MTU rewrites the collection's own file
    out = run(args(tree, mtu=1400), capsys)
    assert out["changed"] and '"mtu": 1400' in out["diff"]["after"]


def test_foreign_conflist_never_overwritten(tree, capsys):
    foreign = tree / "net.d" / C.CONFLIST_NAME
    foreign.write_text('{"cniVersion": "0.4.0", "name": "theirs", "plugins": []}')
    out = run(args(tree), capsys)
    assert out.get("failed") and "was not written by flatnet.cluster" in out["msg"]
    assert "theirs" in foreign.read_text()
    # the marker alone is not enough: without the record the file is still not ours
    foreign.write_text(C.conflist_text(C.render_conflist("flatnet", "cni0", 1500, RANGES)))
    out = run(args(tree), capsys)
    assert out.get("failed")
    out = run(args(tree, state="absent"), capsys)
    assert foreign.exists() and "left in place" in json.dumps(out.get("warnings"))


def test_missing_plugins_name_the_package(tree, capsys):
    os.unlink(tree / "usr-lib-cni" / "portmap")
    out = run(args(tree), capsys)
    assert out.get("failed") and "install the containernetworking-plugins package" in out["msg"]
    assert "lacks portmap" in out["msg"]
    assert not (tree / "net.d" / C.CONFLIST_NAME).exists()


def reserve(tree, ip, cid):
    d = tree / "networks" / "flatnet"
    d.mkdir(exist_ok=True)
    (d / ip).write_text(f"{cid}\r\neth0")
    (d / "lock").write_text("")
    (d / "last_reserved_ip.0").write_text(ip)


def test_query_reports_live_and_stale(tree, capsys):
    reserve(tree, "10.244.1.128", "live1")
    reserve(tree, "10.244.1.129", "gone2")
    out = run(args(tree, state="query"), capsys, netns={("10.244.1.128", "eth0"): "netns-a"})
    assert [(c["ip"], c["netns"]) for c in out["containers"]] == [("10.244.1.128", "netns-a"), ("10.244.1.129", None)]
    assert not out["changed"]


def test_absent_keeps_live_reservations_and_names_them(tree, capsys):
    run(args(tree), capsys)
    reserve(tree, "10.244.1.128", "live1234567890abcdef")
    reserve(tree, "10.244.1.129", "gone2")
    netns = {("10.244.1.128", "eth0"): "netns-a"}
    out = run(args(tree, state="absent"), capsys, check_mode=True, netns=netns)
    assert out["changed"] and (tree / "net.d" / C.CONFLIST_NAME).exists()
    out = run(args(tree, state="absent"), capsys, netns=netns)
    assert out["holding"] == ["live12345678 (10.244.1.128, netns netns-a)"]
    assert "still hold addresses" in json.dumps(out.get("warnings"))
    assert not (tree / "net.d" / C.CONFLIST_NAME).exists() and not (tree / "run" / "subnet.env").exists()
    left = sorted(os.listdir(tree / "networks" / "flatnet"))
    assert left == ["10.244.1.128", "last_reserved_ip.0", "lock"]  # the stale .129 is gone
    # the container stops (its runtime's DEL frees the address): the next teardown removes the rest
    os.unlink(tree / "networks" / "flatnet" / "10.244.1.128")
    out = run(args(tree, state="absent"), capsys)
    assert out["changed"] and not (tree / "networks" / "flatnet").exists()
    assert os.listdir(tree / "state") == []
    out = run(args(tree, state="absent"), capsys)
    assert not out["changed"]


def test_corrupt_record_stops_before_any_change(tree, capsys):
    (tree / "state" / "cni.json").write_text("{not json")
    out = run(args(tree), capsys)
    assert out.get("failed") and "cni.json is corrupt" in out["msg"]
    assert not (tree / "net.d" / C.CONFLIST_NAME).exists()
