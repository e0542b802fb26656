# SPDX-License-Identifier: GPL-3.0-or-later
"""The peers module's input, checked by the module itself (issue 16: no suboptions, peer lines),
and the cheap canonical parsers of module_utils/peers_reconcile.py."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.flatnet.cluster.plugins.filter.peers_of import _peers_of
from ansible_collections.flatnet.cluster.plugins.module_utils import peers_reconcile as pr
from ansible_collections.flatnet.cluster.plugins.module_utils.peers_reconcile import PeersError
from ansible_collections.flatnet.cluster.plugins.plugin_utils import cluster_plan

VX = {"name": "node3", "mode": "vxlan", "underlay_ip": "192.168.60.13", "pod_cidrs": ["10.244.2.0/24", "fd00:0:0:2::/64"],
      "vtep_ips": ["10.244.2.0", "fd00:0:0:2::"], "vtep_mac": "0e:00:00:00:00:13"}
DIRECT = {"name": "node2", "mode": "direct", "underlay_ip": "192.168.50.12", "pod_cidrs": ["10.244.1.0/24"],
          "vtep_ips": [], "vtep_mac": None}


def test_a_peer_line_round_trips():
    for peer in (VX, DIRECT):
        line = pr.peer_line(peer)
        assert pr.parse_peer_line(line) == peer
        assert pr.check_peers([line]) == pr.check_peers([peer]) == [peer]
    assert pr.peer_line(DIRECT) == "node2 direct 192.168.50.12 10.244.1.0/24 - -"


def test_defaults_of_a_mapping():
    assert pr.check_peers([{"name": "n", "underlay_ip": "10.0.0.1"}]) == [
        {"name": "n", "underlay_ip": "10.0.0.1", "mode": "direct", "pod_cidrs": [], "vtep_ips": [], "vtep_mac": None}]
    assert pr.check_peers(None) == []


@pytest.mark.parametrize("entries,fragment", [
    ("node2", "peers must be a list"),
    ([17], "peers[0] is a int, not a mapping or a peer line"),
    ([{"name": "n", "underlay_ip": "10.0.0.1", "vtep": "x"}], "peers[0] has unknown keys vtep"),
    ([{"underlay_ip": "10.0.0.1"}], "peers[0]: name is required"),
    ([DIRECT, {"name": "n"}], "peers[1] (n): underlay_ip is required"),
    ([{"name": "n", "underlay_ip": "10.0.0.1", "mode": "bgpx"}], "peers[0] (n): mode 'bgpx' is not one of direct, vxlan"),
    ([{"name": "n", "underlay_ip": "10.0.0.1", "pod_cidrs": "10.0.0.0/24"}], "pod_cidrs must be a list of strings"),
    ([{"name": "n", "underlay_ip": "10.0.0.1", "vtep_ips": [1]}], "vtep_ips must be a list of strings"),
    ([{"name": "n", "underlay_ip": "10.0.0.1", "vtep_mac": 5}], "vtep_mac must be a string"),
    (["n direct 10.0.0.1 -"], "peers[0] 'n direct 10.0.0.1 -' is not a peer line"),
    (["n tunnel 10.0.0.1 - - -"], "peers[0] (n): mode 'tunnel' is not one of"),
])
def test_bad_peers_are_refused_naming_the_entry(entries, fragment):
    with pytest.raises(PeersError) as err:
        pr.check_peers(entries)
    assert fragment in str(err.value)


@pytest.mark.parametrize("field", ["name", "underlay_ip", "vtep_mac"])
def test_a_field_with_white_space_cannot_make_a_line(field):
    with pytest.raises(PeersError, match="cannot be a field of a peer line"):
        pr.peer_line(dict(VX, **{field: "a b"}))


def test_bad_addresses_in_a_line_still_fail_in_desired_state():
    peers = pr.check_peers(["n direct 10.0.0.300 10.244.1.0/24 - -"])
    with pytest.raises(ValueError):
        pr.desired_state(peers, "eth0", {})


def test_filter_lines_match_the_mappings():
    underlay = {"interface": "eth0", "prefix": 24, "network": "192.168.50.0/24", "mtu": 1500}
    nodes = {f"node{i}": {"underlay": dict(underlay, ip=f"192.168.50.1{i}"), "pods": []} for i in (1, 2, 3)}
    nodes["node3"]["underlay"] = dict(underlay, ip="192.168.60.13", network="192.168.60.0/24")
    plan = cluster_plan.build_plan(nodes, backend="auto")
    peers = _peers_of(plan, "node1")
    lines = _peers_of(plan, "node1", lines=True)
    assert [pr.parse_peer_line(line) for line in lines] == [
        {k: p[k] for k in pr.PEER_KEYS} for p in peers]
    assert [p["mode"] for p in peers] == ["direct", "vxlan"]
    with pytest.raises(Exception, match="lines must be true or false"):
        _peers_of(plan, "node1", lines="yes")


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_net_matches_ipaddress(value, prefix):
    text = f"{ipaddress.IPv4Address(value)}/{prefix}"
    assert pr._net(text) == str(ipaddress.ip_network(text, strict=False))
    bare = str(ipaddress.IPv4Address(value))
    assert pr._net(bare) == str(ipaddress.ip_network(bare))
    assert pr._addr(bare) == bare


@pytest.mark.parametrize("text", ["10.0.0.0/024", "010.0.0.0/24", "fd00:0::/64", "FD00::1/128", "10.1.2.3/16"])
def test_net_of_unusual_spellings_matches_ipaddress(text):
    try:
        want = str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        with pytest.raises(ValueError):
            pr._net(text)
    else:
        assert pr._net(text) == want


def test_addr_refuses_what_ipaddress_refuses():
    for bad in ("10.0.0.01", "10.0.0", "x", " 10.0.0.1"):
        with pytest.raises(ValueError):
            pr._addr(bad)
    assert pr._addr("FD00::1") == "fd00::1"
