# SPDX-License-Identifier: GPL-3.0-or-later
"""The node module's reconcile logic on recorded ``ip -json -details`` outputs."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import bridge_mac
from ansible_collections.flatnet.cluster.plugins.modules import node as m

MAC = bridge_mac("cni0", ["10.244.0.1/24"])
BR = {"ifindex": 4, "ifname": "cni0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
      "mtu": 1450, "address": MAC, "operstate": "UNKNOWN", "ifalias": "flatnet",
      "linkinfo": {"info_kind": "bridge", "info_data": {"stp_state": 0}}}
ADDRS = ["10.244.0.1/24"]
FWD = {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "0",
       "net.ipv4.conf.all.rp_filter": "2"}


# link=None means "no bridge", so the default needs its own marker.
_RECORDED = object()


def present(link=_RECORDED, addrs=None, want=None, now=None, accept_ra=None):
    link = copy.deepcopy(BR) if link is _RECORDED else link
    addrs = copy.deepcopy(ADDRS) if addrs is None else addrs
    want = copy.deepcopy(ADDRS) if want is None else want
    now = copy.deepcopy(FWD) if now is None else now
    return m.plan_present("cni0", want, 1450, link, addrs, accept_ra, now,
                          m.wanted_sysctls(False, now))


def test_in_sync_no_action():
    assert present() == ([], {}, [])


def test_create_bridge():
    lines, writes, actions = present(link=None, addrs=[], now=dict(FWD, **{"net.ipv4.ip_forward": "0"}))
    assert lines == [["link", "add", "cni0", "address", MAC, "mtu", 1450, "type", "bridge"],
                     ["link", "set", "cni0", "alias", "flatnet"],
                     ["addr", "add", "10.244.0.1/24", "dev", "cni0"],
                     ["link", "set", "cni0", "up"]]
    assert writes == {"net.ipv4.ip_forward": "1"}
    assert "set net.ipv4.ip_forward=1 (was 0)" in actions


def test_dual_stack_bridge_sets_accept_ra():
    want = ["10.244.0.1/24", "fd00:10::1/64"]
    _l, writes, _a = m.plan_present("cni0", want, 1450, None, [], None, FWD, m.wanted_sysctls(True, FWD))
    assert writes["net.ipv6.conf.cni0.accept_ra"] == "0"
    assert writes["net.ipv6.conf.all.forwarding"] == "1"
    _l, writes, _a = m.plan_present("cni0", want, 1450, BR, want, "1", dict(
        FWD, **{"net.ipv6.conf.all.forwarding": "1"}), m.wanted_sysctls(True, FWD))
    assert writes == {"net.ipv6.conf.cni0.accept_ra": "0"}


def test_drift_down_mtu_extra_address():
    link = dict(BR, flags=["BROADCAST", "MULTICAST"], mtu=1500)
    lines, _w, _a = present(link=link, addrs=["10.244.0.1/24", "10.244.9.1/24"])
    assert lines == [["link", "set", "cni0", "mtu", 1450],
                     ["addr", "del", "10.244.9.1/24", "dev", "cni0"],
                     ["link", "set", "cni0", "up"]]


def test_bridge_mac_is_fixed_and_derived():
    # A bridge left alone takes its lowest port's MAC; the pods' static gateway entries
    # need one that does not move, and the same one after the bridge is rebuilt.
    assert MAC == bridge_mac("cni0", ["10.244.0.1"]) and MAC.startswith("0a:")
    assert bridge_mac("cni0", ["fd00:10::1/64", "10.244.0.1/24"]) == MAC
    assert bridge_mac("cni0", ["10.244.1.1/24"]) != MAC
    assert bridge_mac("cni0", []) is None
    lines, _w, actions = present(link=dict(BR, address="ce:11:22:33:44:55"))
    assert lines == [["link", "set", "cni0", "address", MAC]]
    assert actions == [f"cni0: set MAC {MAC} (was ce:11:22:33:44:55)"]


def test_foreign_bridge_with_other_address_refused():
    with pytest.raises(m.NodeError, match="already has an IP address different from"):
        present(link=dict(BR, ifalias=None), addrs=["10.88.0.1/16"])


def test_foreign_bridge_without_address_adopted():
    lines, _w, actions = present(link=dict(BR, ifalias=None), addrs=[])
    assert ["link", "set", "cni0", "alias", "flatnet"] in lines
    assert actions[0].startswith("adopt bridge")


def test_not_a_bridge_refused():
    with pytest.raises(m.NodeError, match="not a bridge"):
        present(link=dict(BR, linkinfo={"info_kind": "veth"}))


def test_rp_filter_only_from_strict():
    assert m.wanted_sysctls(False, {"net.ipv4.conf.all.rp_filter": "1"})["net.ipv4.conf.all.rp_filter"] == "2"
    assert "net.ipv4.conf.all.rp_filter" not in m.wanted_sysctls(False, {"net.ipv4.conf.all.rp_filter": "0"})


def test_record_keeps_first_original_and_restore_only_our_value():
    now = {"net.ipv4.ip_forward": "0"}
    writes = {"net.ipv4.ip_forward": "1"}
    rec = m.record_sysctls({}, writes, now, {"net.ipv4.ip_forward": "1"})
    assert rec == {"net.ipv4.ip_forward": {"original": "0", "value": "1"}}
    # a later run finds "1" and must not overwrite the original
    assert m.record_sysctls({"sysctls": rec}, {}, {"net.ipv4.ip_forward": "1"},
                            {"net.ipv4.ip_forward": "1"}) == rec
    assert m.plan_restore({"sysctls": rec}, {"net.ipv4.ip_forward": "1"}) == {"net.ipv4.ip_forward": "0"}
    # someone else changed it since: leave it
    assert m.plan_restore({"sysctls": rec}, {"net.ipv4.ip_forward": "0"}) == {}


def test_address_without_prefix_refused():
    with pytest.raises(m.NodeError, match="prefix"):
        m.normalise_addresses(["10.244.0.1"])


def test_neighbour_limits_are_raised_never_lowered_and_only_where_they_exist():
    current = {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.neigh.default.gc_thresh1": "128",
        "net.ipv4.neigh.default.gc_thresh2": "512",
        "net.ipv4.neigh.default.gc_thresh3": "100000",
        # IPv6 limits absent: a child network namespace has none.
    }
    want = m.wanted_sysctls(True, current)
    assert want["net.ipv4.neigh.default.gc_thresh1"] == "8192"
    assert want["net.ipv4.neigh.default.gc_thresh2"] == "32768"
    assert "net.ipv4.neigh.default.gc_thresh3" not in want
    assert not any(name.startswith("net.ipv6.neigh") for name in want)
    assert m.wanted_sysctls(False, {"net.ipv4.ip_forward": "0"}) == {"net.ipv4.ip_forward": "1"}
