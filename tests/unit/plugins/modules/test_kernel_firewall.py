# SPDX-License-Identifier: GPL-3.0-or-later
"""The firewall module against the real kernel, in throwaway namespaces.

pod (10.244.0.2) ─ node (router, table inet flatnet) ─ pod2 (10.244.1.2)
                                                     └ outside (198.51.100.2, no route back to pods)

Pod → outside only works when masqueraded; pod → pod2 must arrive with the pod's own address.
Observers are small nftables counters in tables the test owns, never in ``inet flatnet``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

import ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 as _iproute2

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(_iproute2.__file__)))))))
MODULE = "ansible_collections.flatnet.cluster.plugins.modules.firewall"
ARGS = {"cluster_cidrs": ["10.244.0.0/16"], "masquerade": True, "vxlan_port": 8472,
        "peer_underlay_ips": ["198.51.100.1", "198.51.100.3"]}


def sh(*argv, check=True, input=None):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, input=input,
                          env=dict(os.environ, LC_ALL="C"), check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed: {proc.stderr}{proc.stdout}")
    return proc


class Lab:
    def __init__(self):
        self.prefix = "t" + secrets.token_hex(3)
        self.ns = {k: self.prefix + k for k in ("node", "pod", "pod2", "out")}
        self.state_dir = f"/run/{self.prefix}-state"

    def build(self):
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        node = self.ns["node"]
        for peer, dev, node_ip, peer_ip in (("pod", "eth1", "10.244.0.1/24", "10.244.0.2/24"),
                                            ("pod2", "eth2", "10.244.1.1/24", "10.244.1.2/24"),
                                            ("out", "eth0", "198.51.100.1/24", "198.51.100.2/24")):
            sh("ip", "-n", node, "link", "add", dev, "type", "veth", "peer", "name", "eth0",
               "netns", self.ns[peer])
            sh("ip", "-n", node, "addr", "add", node_ip, "dev", dev)
            sh("ip", "-n", node, "link", "set", dev, "up")
            sh("ip", "-n", self.ns[peer], "addr", "add", peer_ip, "dev", "eth0")
            sh("ip", "-n", self.ns[peer], "link", "set", "eth0", "up")
            if peer != "out":
                sh("ip", "-n", self.ns[peer], "route", "add", "default", "via", node_ip.split("/", 1)[0])
        sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # Observers: who arrives at pod2 and outside, and which VXLAN packets pass the node's input.
        self.nft("pod2", "add table ip obs; add chain ip obs in { type filter hook input priority 0; }; "
                         "add rule ip obs in ip saddr 10.244.0.2 counter; "
                         "add rule ip obs in ip saddr 198.51.100.1 counter")
        self.nft("out", "add table ip obs; add chain ip obs in { type filter hook input priority 0; }; "
                        "add rule ip obs in ip saddr 198.51.100.1 icmp type echo-request counter; "
                        "add rule ip obs in ip saddr 10.244.0.2 counter")
        self.nft("node", "add table ip obs; add chain ip obs in { type filter hook input priority 10; }; "
                         "add rule ip obs in udp dport 8472 counter")

    def destroy(self):
        for ns in self.ns.values():
            sh("ip", "netns", "del", ns, check=False)
        sh("rm", "-rf", self.state_dir, check=False)

    def nft(self, ns, script, check=True):
        return sh("ip", "netns", "exec", self.ns[ns], "nft", "-f", "-", input=script + "\n", check=check)

    def counters(self, ns):
        out = sh("ip", "netns", "exec", self.ns[ns], "nft", "-j", "list", "table", "ip", "obs").stdout
        result = []
        for item in json.loads(out)["nftables"]:
            for expr in (item.get("rule") or {}).get("expr", []):
                if "counter" in expr:
                    result.append(expr["counter"]["packets"])
        return result

    def tables(self, ns="node"):
        out = sh("ip", "netns", "exec", self.ns[ns], "nft", "list", "tables").stdout
        return sorted(line.strip() for line in out.splitlines() if line.strip())

    def run(self, check_mode=False, diff=False, **args):
        args.setdefault("state_dir", self.state_dir)
        args["_ansible_check_mode"] = check_mode
        args["_ansible_diff"] = diff
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns["node"], sys.executable, "-m", MODULE],
            input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=COLLECTION_ROOT, LC_ALL="C"), check=False,
        )
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"module output is not JSON: {proc.stdout}{proc.stderr}") from None

    def ping(self, ns, dst):
        return sh("ip", "netns", "exec", self.ns[ns], "ping", "-c", "1", "-W", "1", dst,
                  check=False).returncode == 0

    def send_vxlan(self, ns):
        code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.sendto(b'x' * 8, ('198.51.100.1', 8472))")
        sh("ip", "netns", "exec", self.ns[ns], sys.executable, "-c", code)


@pytest.fixture
def lab():
    lab = Lab()
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()


def test_apply_idempotence_drift_and_absent(lab):
    assert not lab.ping("pod", "198.51.100.2"), "outside must not reach pods without masquerade"

    res = lab.run(check_mode=True, **ARGS)
    assert res["changed"] is True and res["actions"] == ["write table inet flatnet (table missing)"]
    assert "table inet flatnet" not in lab.tables()
    res = lab.run(diff=True, **ARGS)
    assert res["changed"] is True, res
    assert res["diff"]["before"] == "" and "masquerade fully-random" in res["diff"]["after"]
    assert "table inet flatnet" in lab.tables()
    res = lab.run(**ARGS)
    assert res["changed"] is False and res["actions"] == []
    assert res["forward_drop_chains"] == []

    # Masquerade: out of the cluster only; pod-to-pod keeps the pod's address.
    assert lab.ping("pod", "198.51.100.2")
    # The one unmasqueraded request is the failed ping at the start.
    assert lab.counters("out") == [1, 1]
    assert lab.ping("pod", "10.244.1.2")
    assert lab.counters("pod2") == [1, 0]

    # VXLAN guard: a non-node sender is dropped before the test's observer (priority 10).
    lab.send_vxlan("out")
    assert lab.counters("node") == [0]
    res = lab.run(**dict(ARGS, peer_underlay_ips=["198.51.100.1", "198.51.100.2"]))
    assert res["actions"] == ["write table inet flatnet (definition changed)"]
    lab.send_vxlan("out")
    assert lab.counters("node") == [1]
    assert lab.run(**ARGS)["changed"] is True

    # Drift: a rule edited by hand is detected (check mode) and repaired.
    good = sh("ip", "netns", "exec", lab.ns["node"], "nft", "list", "table", "inet", "flatnet").stdout
    lab.nft("node", "insert rule inet flatnet prerouting ip saddr 10.244.0.2 drop")
    assert lab.ping("pod", "198.51.100.2") is False
    res = lab.run(check_mode=True, **ARGS)
    assert res["actions"] == ["write table inet flatnet (live table differs from the recorded one)"]
    assert lab.run(**ARGS)["changed"] is True
    assert lab.run(**ARGS)["changed"] is False
    assert sh("ip", "netns", "exec", lab.ns["node"], "nft", "list", "table", "inet", "flatnet").stdout == good
    assert lab.ping("pod", "198.51.100.2")

    # Drift: the table deleted by hand.
    lab.nft("node", "delete table inet flatnet")
    assert lab.run(**ARGS)["actions"] == ["write table inet flatnet (table missing)"]
    assert lab.run(**ARGS)["changed"] is False

    # Absent: our table and record go; other tables stay.
    assert lab.run(check_mode=True, state="absent")["changed"] is True
    assert "table inet flatnet" in lab.tables()
    res = lab.run(state="absent")
    assert res["changed"] is True and res["actions"] == ["delete table inet flatnet"]
    assert lab.run(state="absent")["changed"] is False
    assert lab.tables() == ["table ip obs"]
    assert not os.path.exists(os.path.join(lab.state_dir, "firewall.json"))


def test_masquerade_off_and_no_vxlan(lab):
    res = lab.run(**dict(ARGS, masquerade=False, vxlan_port=None))
    assert "postrouting" not in res["ruleset"] and "input" not in res["ruleset"]
    assert not lab.ping("pod", "198.51.100.2")
    assert lab.ping("pod", "10.244.1.2")


def test_forward_drop_elsewhere_wins_over_our_accept(lab):
    """What iptables-nft's FORWARD DROP (Docker) does to pod traffic, and what really fixes it."""
    lab.nft("node", "add table ip filter; "
                    "add chain ip filter FORWARD { type filter hook forward priority filter; policy drop; }")
    res = lab.run(**ARGS)
    assert res["forward_drop_chains"] == ["ip filter FORWARD"]
    assert "ip filter FORWARD" in json.dumps(res.get("warnings"))
    # Our accept does not override another base chain's drop on the same hook.
    assert not lab.ping("pod", "10.244.1.2")
    # An accept inside the dropping chain itself (what DOCKER-USER rules do) is the fix.
    lab.nft("node", "add rule ip filter FORWARD ip saddr 10.244.0.0/16 accept; "
                    "add rule ip filter FORWARD ip daddr 10.244.0.0/16 accept")
    assert lab.ping("pod", "10.244.1.2")
    assert lab.run(state="absent")["changed"] is True
    assert lab.tables() == ["table ip filter", "table ip obs"]


def test_vxlan_guard_off_and_on(lab):
    """flatnet_vxlan_guard: false leaves out the input chain; back on, a stranger is dropped again."""
    res = lab.run(**dict(ARGS, vxlan_guard=False))
    assert res["changed"] is True and "chain input" not in res["ruleset"] and "drop" not in res["ruleset"]
    lab.send_vxlan("out")
    assert lab.counters("node") == [1]
    res = lab.run(**ARGS)
    assert res["actions"] == ["write table inet flatnet (definition changed)"]
    lab.send_vxlan("out")
    assert lab.counters("node") == [1]


def test_notrack_exempts_pod_traffic_only_when_asked(lab):
    """Pod-to-pod packets are untracked with notrack (the default), tracked without it; traffic
    leaving the cluster is tracked either way (masquerade needs it)."""
    lab.nft("node", "add chain ip obs seen { type filter hook forward priority 10; }; "
                    "add rule ip obs seen ip daddr 10.244.1.2 ct state untracked counter; "
                    "add rule ip obs seen ip daddr 10.244.1.2 ct state new,established counter; "
                    "add rule ip obs seen ip daddr 198.51.100.2 ct state new,established counter")
    assert lab.run(**ARGS)["changed"] is True
    assert lab.ping("pod", "10.244.1.2") and lab.ping("pod", "198.51.100.2")
    assert lab.counters("node")[1:] == [1, 0, 1]
    res = lab.run(**dict(ARGS, notrack=False))
    assert "notrack" not in res["ruleset"] and "masquerade" in res["ruleset"]
    assert lab.ping("pod", "10.244.1.2") and lab.ping("pod", "198.51.100.2")
    assert lab.counters("node")[1:] == [1, 1, 2]
