# SPDX-License-Identifier: GPL-3.0-or-later
"""Ownership by record, against a real kernel: the node and peers modules inside a throwaway
node (``unshare --net --mount --pid`` with a private tmpfs on /run, so the state dir and every
link live and die with it). Every name carries a per-run prefix; killing the node's init frees
everything, even when a test fails. Needs root.

Covered: a foreign bridge is refused and untouched, an adopted one is restored by teardown; a
renamed bridge and VXLAN device (the old ones go, a rerun is unchanged, teardown removes the
new ones and restores the sysctls); a corrupt state file fails before any change; sysctl
originals survive an interrupted run; an underlay that takes router advertisements keeps them.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.flatnet.cluster.tests.unit.plugins.modules.throwaway import (
    ThrowawayNode,
    kernel_tests_possible,
)
from ansible_collections.flatnet.cluster.plugins.module_utils.names import bridge_mac

pytestmark = pytest.mark.skipif(
    not kernel_tests_possible(),
    reason="kernel tests need root, unshare and nsenter",
)

GW = ["10.77.0.1/24", "fd00:77::1/64"]
CIDRS = ["10.77.0.0/24", "fd00:77::/64"]


class Node(ThrowawayNode):
    def __init__(self):
        super().__init__()
        self.underlay = f"{self.prefix}u0"

    def links(self):
        return {link["ifname"] for link in self.ipj("link", "show")}

    def sysctl(self, *names):
        return self.sh(["sysctl", "-n"] + list(names)).stdout.split()

    def write(self, name, text):
        self.sh(["sh", "-c", f"mkdir -p {self.state_dir} && printf %s '{text}' > {self.state_dir}/{name}"])

    def read(self, name):
        res = self.sh(["cat", f"{self.state_dir}/{name}"], check=False)
        return json.loads(res.stdout) if res.returncode == 0 else None

    def snapshot(self):
        """Everything a refused run must leave alone."""
        links = []
        for link in self.ipj("-details", "link", "show"):
            info = dict((link.get("linkinfo") or {}).get("info_data") or {})
            # Carrier (NO-CARRIER, LOWER_UP) is the kernel's to change: a fresh veth gets it a
            # moment after it is set up. What a run sets is UP, which stays in.
            flags = [f for f in link.get("flags", []) if f not in ("NO-CARRIER", "LOWER_UP")]
            links.append((link["ifname"], link.get("address"), link.get("mtu"), flags,
                          link.get("ifalias"), link.get("master"),
                          (link.get("linkinfo") or {}).get("info_kind"),
                          # bridge timers tick on their own
                          sorted((k, str(v)) for k, v in info.items() if "timer" not in k)))
        # Global addresses and main-table routes: link-local ones come and go on their own
        # (IPv6 DAD on a fresh link).
        addrs = sorted((a["ifname"], i["local"], i["prefixlen"]) for a in self.ipj("addr", "show")
                       for i in a.get("addr_info", []) if i.get("scope") == "global")
        routes = sorted(json.dumps(r, sort_keys=True)
                        for family in ("-4", "-6") for r in self.ipj(family, "route", "show", "table", "main")
                        if not r.get("dst", "").startswith(("fe80", "ff")))
        return (links, addrs, routes,
                self.sysctl("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                            f"net.ipv6.conf.{self.underlay}.accept_ra"),
                self.sh(["ls", "-A", "/run"]).stdout)


@pytest.fixture
def node():
    n = Node()
    try:
        # The underlay: a veth end with an address (and accept_ra=1, the kernel's default).
        n.ip("link", "add", n.underlay, "type", "veth", "peer", "name", f"{n.prefix}u1")
        n.ip("addr", "add", "192.168.77.5/24", "dev", n.underlay)
        n.ip("link", "set", n.underlay, "up")
        n.ip("link", "set", f"{n.prefix}u1", "up")
        n.sh(["sysctl", "-qw", f"net.ipv6.conf.{n.underlay}.accept_ra=1",
              "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"])
        yield n
    finally:
        n.close()


def node_args(n, bridge, **kw):
    return dict(dict(bridge=bridge, addresses=GW, mtu=1400, pod_cidrs=CIDRS,
                     underlay_interface=n.underlay), **kw)


def peers_args(n, device, **vxlan):
    vx = {"device": device, "vni": 1, "port": 8472, "local_ip": "192.168.77.5",
          "mac": "0e:00:00:00:77:05", "addresses": ["10.77.0.0/32"], "mtu": 1400}
    vx.update(vxlan)
    return {"underlay_interface": n.underlay, "vxlan": vx, "peers": [
        {"name": "far", "mode": "vxlan", "underlay_ip": "192.168.77.6", "pod_cidrs": ["10.77.1.0/24"],
         "vtep_ips": ["10.77.1.0"], "vtep_mac": "0e:00:00:00:77:06"},
        {"name": "near", "mode": "direct", "underlay_ip": "192.168.77.7", "pod_cidrs": ["10.77.2.0/24"]},
    ]}


def routes(n, *args):
    return sorted(f"{r['dst']} {r.get('gateway', '-')} {r['dev']}"
                  for r in n.ipj("-4", "route", "show", *args) if r.get("dst") != "default")


def converge(n, name, args):
    """Check mode (changed, nothing applied), real (changed), again (unchanged)."""
    before = n.snapshot()
    r = n.module(name, args, check_mode=True)
    assert r["changed"] and r["actions"], r
    assert n.snapshot() == before, "check mode changed the node"
    r = n.module(name, args)
    assert r["changed"], r
    again = n.module(name, args)
    assert not again["changed"] and again["actions"] == [], again
    return r


def test_foreign_bridge_is_refused_and_untouched(node):
    br = f"{node.prefix}br"
    node.ip("link", "add", br, "address", "ce:00:00:00:00:01", "mtu", "1300", "type", "bridge")
    node.ip("addr", "add", "10.88.0.1/16", "dev", br)
    before = node.snapshot()
    for args in (node_args(node, br), node_args(node, br, addresses=[])):
        r = node.module("node", args, expect_fail=True)
        assert f"bridge {br} exists and was not made by flatnet.cluster" in r["msg"]
        assert "flatnet_bridge_adopt" in r["msg"] and "another name" in r["msg"]
        assert node.snapshot() == before
    assert node.read("node.json") is None
    # Even opted in, a bridge whose addresses something else uses is not taken.
    r = node.module("node", node_args(node, br, adopt=True), expect_fail=True)
    assert "cannot be adopted" in r["msg"] and "10.88.0.1/16" in r["msg"]
    # Teardown never deletes it.
    node.module("node", node_args(node, br, state="absent"))
    assert node.snapshot() == before


def test_adopted_bridge_is_used_and_restored(node):
    br = f"{node.prefix}br"
    node.ip("link", "add", br, "address", "ce:00:00:00:00:02", "mtu", "1300", "type", "bridge")
    node.ip("link", "set", br, "alias", "theirs")
    node.sh(["sysctl", "-qw", f"net.ipv6.conf.{br}.accept_ra=1"])

    def picture():
        link = node.ipj("-details", "link", "show", br)[0]
        addrs = [a["local"] for a in node.ipj("addr", "show", br)[0].get("addr_info", [])
                 if a.get("scope") == "global"]
        return (link["address"], link["mtu"], "UP" in link["flags"], link.get("ifalias"), addrs,
                node.sysctl(f"net.ipv6.conf.{br}.accept_ra"))

    original = picture()
    assert original == ("ce:00:00:00:00:02", 1300, False, "theirs", [], ["1"])
    r = converge(node, "node", node_args(node, br, adopt=True))
    assert r["actions"][0].startswith(f"adopt bridge {br} (record its MAC ce:00:00:00:00:02, mtu 1300")
    assert picture() == (bridge_mac(br, GW), 1400, True, "theirs", ["10.77.0.1", "fd00:77::1"], ["0"])
    rec = node.read("node.json")
    assert rec["adopted"] == {"mac": "ce:00:00:00:00:02", "mtu": 1300, "addresses": [], "up": False,
                              "accept_ra": "1"}
    # Recorded as adopted: a rerun without the option still uses it, unchanged.
    assert not node.module("node", node_args(node, br))["changed"]
    r = node.module("node", node_args(node, br, state="absent"), check_mode=True)
    assert r["changed"] and f"delete bridge {br}" not in r["actions"]
    r = node.module("node", node_args(node, br, state="absent"))
    assert f"{br}: restore MAC ce:00:00:00:00:02" in r["actions"]
    assert picture() == original
    assert node.sysctl("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding") == ["0", "0"]
    assert not node.module("node", node_args(node, br, state="absent"))["changed"]
    assert picture() == original


def test_rename_bridge_and_vxlan_device(node):
    a, b = f"{node.prefix}a", f"{node.prefix}b"
    x, y = f"{node.prefix}x", f"{node.prefix}y"
    converge(node, "node", node_args(node, a))
    converge(node, "peers", peers_args(node, x))
    assert {a, x} <= node.links()
    assert routes(node) == [f"10.77.0.0/24 - {a}", f"10.77.1.0/24 10.77.1.0 {x}",
                            f"10.77.2.0/24 192.168.77.7 {node.underlay}", f"192.168.77.0/24 - {node.underlay}"]

    r = converge(node, "node", node_args(node, b))
    assert r["actions"][:2] == [f"delete bridge {a}", f"add bridge {b} mtu 1400"], r["actions"]
    r = converge(node, "peers", peers_args(node, y))
    assert r["actions"][0] == f"delete old vxlan device {x} (now {y})", r["actions"]
    links = node.links()
    assert a not in links and x not in links and {b, y} <= links
    assert routes(node) == [f"10.77.0.0/24 - {b}", f"10.77.1.0/24 10.77.1.0 {y}",
                            f"10.77.2.0/24 192.168.77.7 {node.underlay}", f"192.168.77.0/24 - {node.underlay}"]
    addrs = {link["ifname"]: sorted(i["local"] for i in link.get("addr_info", []) if i.get("scope") == "global")
             for link in node.ipj("addr", "show")}
    assert addrs[b] == ["10.77.0.1", "fd00:77::1"] and addrs[y] == ["10.77.0.0"]
    assert [v for k, v in addrs.items() if "10.77.0.1" in v] == [addrs[b]]
    assert node.read("node.json")["bridge"] == b and "retired" not in node.read("node.json")
    assert node.read("peers.json")["device"] == y

    # A changed VNI and port: our device is recreated in place.
    r = node.module("peers", peers_args(node, y, vni=9, port=4789))
    assert r["actions"][0].startswith(f"recreate vxlan device {y} (vni 1 -> 9, port 8472 -> 4789)")
    data = node.ipj("-details", "link", "show", y)[0]["linkinfo"]["info_data"]
    assert (data["id"], data["port"]) == (9, 4789)
    assert not node.module("peers", peers_args(node, y, vni=9, port=4789))["changed"]

    # Teardown with the OLD names configured still finds the recorded new ones.
    r = node.module("peers", {"vxlan": {"device": x}, "state": "absent"})
    assert f"delete vxlan device {y}" in r["actions"]
    r = node.module("node", {"bridge": a, "state": "absent"})
    assert f"delete bridge {b}" in r["actions"]
    links = node.links()
    assert not {a, b, x, y} & links
    assert routes(node) == [f"192.168.77.0/24 - {node.underlay}"]
    assert node.sysctl("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                       f"net.ipv6.conf.{node.underlay}.accept_ra") == ["0", "0", "1"]
    assert node.read("node.json") is None and node.read("peers.json") is None


def test_unrecorded_links_are_never_deleted(node):
    # A link that carries the marker but is not recorded: teardown leaves it, with a warning.
    x = f"{node.prefix}x"
    node.ip("link", "add", x, "type", "vxlan", "id", "5", "dstport", "4789", "local", "192.168.77.5")
    node.ip("link", "set", x, "alias", "flatnet")
    r = node.module("peers", {"vxlan": {"device": x}, "state": "absent"})
    assert not r["changed"] and x in node.links()
    assert "not recorded" in json.dumps(r.get("warnings")), r
    # A record that names a link which has lost the marker: left in place too.
    node.ip("link", "set", x, "alias", "theirs")
    node.write("peers.json", json.dumps({"device": x, "peers": []}))
    r = node.module("peers", {"vxlan": {"device": x}, "state": "absent"})
    assert x in node.links()
    assert all(not a.startswith("delete vxlan") for a in r["actions"])


@pytest.mark.parametrize("module, record", [("node", "node.json"), ("peers", "peers.json"),
                                            ("node_facts", "node.json")])
def test_corrupt_state_file_fails_before_any_change(node, module, record):
    args = {"node": node_args(node, f"{node.prefix}br"), "peers": peers_args(node, f"{node.prefix}x"),
            "node_facts": {"underlay_interface": node.underlay}}[module]
    for text in ("{half", "[1, 2]"):
        node.write(record, text)
        before = node.snapshot()
        for check_mode in (True, False):
            r = node.module(module, args, check_mode=check_mode, expect_fail=True)
            assert f"{node.state_dir}/{record}" in r["msg"] and "corrupt" in r["msg"]
            assert "move it away" in r["msg"]
            assert node.snapshot() == before
        assert node.sh(["cat", f"{node.state_dir}/{record}"]).stdout == text


def test_sysctl_originals_survive_an_interrupted_run(node):
    br = f"{node.prefix}br"
    # A run that fails after it recorded its intent and before it finished (the bridge cannot
    # take that MTU): the originals are on disk although nothing was applied yet.
    r = node.module("node", node_args(node, br, mtu=70000), expect_fail=True)
    rec = node.read("node.json")
    assert rec["sysctls"]["net.ipv4.ip_forward"] == {"original": "0", "value": "1"}
    assert rec["sysctls"]["net.ipv6.conf.all.forwarding"] == {"original": "0", "value": "1"}
    # The interrupted run got as far as the sysctls (simulated), then a rerun completes.
    node.sh(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
             f"net.ipv6.conf.{node.underlay}.accept_ra=2"])
    r = node.module("node", node_args(node, br))
    assert r["changed"]
    assert not node.module("node", node_args(node, br))["changed"]
    rec = node.read("node.json")
    assert rec["sysctls"]["net.ipv4.ip_forward"]["original"] == "0"
    assert rec["sysctls"][f"net.ipv6.conf.{node.underlay}.accept_ra"] == {"original": "1", "value": "2"}
    node.module("node", node_args(node, br, state="absent"))
    assert node.sysctl("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                       f"net.ipv6.conf.{node.underlay}.accept_ra") == ["0", "0", "1"]


def test_underlay_keeps_router_advertisements(node):
    br = f"{node.prefix}br"
    other = f"{node.prefix}u1"
    node.sh(["sysctl", "-qw", f"net.ipv6.conf.{other}.accept_ra=1"])
    ra = f"net.ipv6.conf.{node.underlay}.accept_ra"
    r = node.module("node", node_args(node, br), check_mode=True)
    assert f"set {ra}=2 (was 1)" in r["actions"]
    assert r["actions"].index(f"set {ra}=2 (was 1)") < r["actions"].index(
        "set net.ipv6.conf.all.forwarding=1 (was 0)")
    assert node.sysctl(ra) == ["1"]
    converge(node, "node", node_args(node, br))
    assert node.sysctl(ra, "net.ipv6.conf.all.forwarding", f"net.ipv6.conf.{other}.accept_ra") == ["2", "1", "1"]
    # Drift back to 1 is repaired (while forwarding is on, 1 means "ignore RAs").
    node.sh(["sysctl", "-qw", f"{ra}=1"])
    assert node.module("node", node_args(node, br))["actions"] == [f"set {ra}=2 (was 1)"]
    node.module("node", node_args(node, br, state="absent"))
    assert node.sysctl(ra, "net.ipv6.conf.all.forwarding") == ["1", "0"]


def test_ipv4_only_cluster_leaves_accept_ra_alone(node):
    br = f"{node.prefix}br"
    ra = f"net.ipv6.conf.{node.underlay}.accept_ra"
    args = node_args(node, br, addresses=["10.77.0.1/24"], pod_cidrs=["10.77.0.0/24"])
    converge(node, "node", args)
    assert node.sysctl(ra, "net.ipv6.conf.all.forwarding") == ["1", "0"]
    assert ra not in node.read("node.json")["sysctls"]


def test_a_vlan_underlay_with_a_dot_in_its_name_keeps_router_advertisements(node):
    # eth0.100-style names: sysctl(8) would split "net.ipv6.conf.eth0.100.accept_ra" at every
    # dot; the kernel layer names the /proc/sys file with the interface as one component.
    vlan = f"{node.prefix}u0.100"
    node.ip("link", "add", vlan, "type", "veth", "peer", "name", f"{node.prefix}u2")
    node.ip("link", "set", vlan, "up")
    path = f"net/ipv6/conf/{vlan}/accept_ra"
    node.sh(["sysctl", "-qw", f"{path}=1"])
    br = f"{node.prefix}br"
    ra = f"net.ipv6.conf.{vlan}.accept_ra"
    converge(node, "node", node_args(node, br, underlay_interface=vlan))
    assert node.sysctl(path, "net.ipv6.conf.all.forwarding") == ["2", "1"]
    assert node.read("node.json")["sysctls"][ra] == {"original": "1", "value": "2"}
    node.module("node", node_args(node, br, underlay_interface=vlan, state="absent"))
    assert node.sysctl(path, "net.ipv6.conf.all.forwarding") == ["1", "0"]
