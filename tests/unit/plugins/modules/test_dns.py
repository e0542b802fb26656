# SPDX-License-Identifier: GPL-3.0-or-later
"""The dns module on a temporary directory tree: records, resolv.conf, pruning, absent."""
from __future__ import annotations

import json
import os

import pytest
from ansible_collections.flatnet.cluster.tests.unit.compat import patch_module_args

from ansible_collections.flatnet.cluster.plugins.modules import dns as dns_module

SERVICES = [{"name": "web", "namespace": "default", "cluster_ip": "10.96.0.1"},
            {"name": "kube-dns", "namespace": "kube-system", "cluster_ip": "10.96.0.10"}]
PODS = [{"name": "web1", "ips": ["10.244.0.2/24", "fd00::2/64"]}, {"name": "flatnet-dns-1", "ips": ["10.244.0.3/24"]}]


def run(tmp_path, capsys, check_mode=False, **kw):
    args = {"services": SERVICES, "pods": PODS, "local_pods": ["web1", "flatnet-dns-1"],
            "skip_pods": ["flatnet-dns-1"], "nameserver": "10.96.0.10", "domain": "cluster.local",
            "hosts_dir": str(tmp_path / "dns" / "hosts"), "netns_dir": str(tmp_path / "netns"),
            "state_dir": str(tmp_path / "state"), "_ansible_check_mode": check_mode, "_ansible_diff": True}
    args.update(kw)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            dns_module.main()
    return json.loads(capsys.readouterr().out)


def test_write_idempotent_prune_absent(tmp_path, capsys):
    out = run(tmp_path, capsys, check_mode=True)
    assert out["changed"] and not (tmp_path / "dns").exists()
    out = run(tmp_path, capsys)
    assert out["changed"]
    records = (tmp_path / "dns" / "hosts" / "records").read_text()
    assert "10.96.0.1 web.default.svc.cluster.local\n" in records
    assert "10.96.0.10 kube-dns.kube-system.svc.cluster.local\n" in records
    assert "10.244.0.2 web1.pod.cluster.local\n" in records and "fd00::2 web1.pod.cluster.local\n" in records
    resolv = (tmp_path / "netns" / "web1" / "resolv.conf").read_text()
    assert "nameserver 10.96.0.10\n" in resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local\n" in resolv
    assert "options ndots:5\n" in resolv
    assert not (tmp_path / "netns" / "flatnet-dns-1").exists()
    assert run(tmp_path, capsys)["changed"] is False

    # web1 leaves the node: its resolv.conf and directory go; a file we never wrote stays.
    (tmp_path / "netns" / "other").mkdir()
    (tmp_path / "netns" / "other" / "resolv.conf").write_text("mine\n")
    out = run(tmp_path, capsys, local_pods=["flatnet-dns-1"])
    assert out["actions"] == [f"remove {tmp_path}/netns/web1/resolv.conf"]
    assert not (tmp_path / "netns" / "web1").exists()

    out = run(tmp_path, capsys, state="absent")
    assert out["changed"] and not (tmp_path / "dns").exists()
    assert not os.path.exists(tmp_path / "state" / "dns.json")
    assert (tmp_path / "netns" / "other" / "resolv.conf").read_text() == "mine\n"
    assert run(tmp_path, capsys, state="absent")["changed"] is False


def test_no_nameserver_means_off(tmp_path, capsys):
    out = run(tmp_path, capsys, nameserver=None)
    assert out["changed"] is False and not (tmp_path / "dns").exists()


def test_bad_pod_name_refused(tmp_path, capsys):
    out = run(tmp_path, capsys, local_pods=["../../etc"])
    assert out["failed"] and "not a DNS label" in out["msg"]
