# SPDX-License-Identifier: GPL-3.0-or-later
"""The peers reconcile logic and module with recorded ``ip -json`` / ``bridge -json`` outputs."""

from __future__ import annotations

import copy
import json
from unittest import mock

import pytest

from ansible.module_utils import basic

from ansible_collections.flatnet.cluster.plugins.module_utils import peers_reconcile as pr
from ansible_collections.flatnet.cluster.tests.unit.compat import patch_module_args
from ansible_collections.flatnet.cluster.plugins.modules import peers as peers_module

VXLAN = {"device": "flatnet.1", "vni": 1, "port": 8472, "local_ip": "192.168.50.11",
         "mac": "0e:11:22:33:44:55", "addresses": ["10.244.0.0/32"], "mtu": 1450}
NODE2 = {"name": "node2", "mode": "direct", "underlay_ip": "192.168.50.12",
         "pod_cidrs": ["10.244.1.0/24"], "vtep_ips": ["10.244.1.0"], "vtep_mac": "0e:aa:00:00:00:12"}
NODE3 = {"name": "node3", "mode": "vxlan", "underlay_ip": "192.168.60.13",
         "pod_cidrs": ["10.244.2.0/24"], "vtep_ips": ["10.244.2.0"], "vtep_mac": "0E:AA:00:00:00:13"}

# Recorded from a node programmed for NODE2 (direct) and NODE3 (vxlan), iproute2 6.1.
ROUTES_V4 = [
    {"dst": "default", "gateway": "192.168.50.1", "dev": "eth0", "protocol": "static", "flags": []},
    {"dst": "10.244.1.0/24", "gateway": "192.168.50.12", "dev": "eth0", "protocol": "157", "flags": []},
    {"dst": "10.244.2.0/24", "gateway": "10.244.2.0", "dev": "flatnet.1", "protocol": "157", "flags": ["onlink"]},
    {"dst": "10.99.0.0/24", "gateway": "192.168.50.12", "dev": "eth0", "protocol": "static", "flags": []},
    {"dst": "192.168.50.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link",
     "prefsrc": "192.168.50.11", "flags": []},
    {"type": "broadcast", "dst": "192.168.50.255", "dev": "eth0", "protocol": "kernel", "flags": []},
]
LINK = {"ifindex": 5, "ifname": "flatnet.1", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "mtu": 1450,
        "address": "0e:11:22:33:44:55", "ifalias": "flatnet",
        "linkinfo": {"info_kind": "vxlan", "info_data": {"id": 1, "local": "192.168.50.11", "link": "eth0",
                                                         "port": 8472, "learning": False}}}
ADDRS = [{"ifname": "flatnet.1", "addr_info": [
    {"family": "inet", "local": "10.244.0.0", "prefixlen": 32, "scope": "global"},
    {"family": "inet6", "local": "fe80::c11:22ff:fe33:4455", "prefixlen": 64, "scope": "link"}]}]
NEIGH = [{"dst": "10.244.2.0", "lladdr": "0e:aa:00:00:00:13", "state": ["PERMANENT"]}]
FDB = [{"mac": "0e:aa:00:00:00:13", "dst": "192.168.60.13", "flags": ["self"], "state": "permanent"}]


def current(routes=None, link=None, addrs=None, neigh=None, fdb=None):
    routes = copy.deepcopy(ROUTES_V4) if routes is None else routes
    link = copy.deepcopy(LINK) if link is None else link
    addrs = copy.deepcopy(ADDRS) if addrs is None else addrs
    neigh = copy.deepcopy(NEIGH) if neigh is None else neigh
    fdb = copy.deepcopy(FDB) if fdb is None else fdb
    return (pr.parse_routes(routes), pr.parse_device(link), pr.parse_addrs(addrs),
            pr.parse_neigh(neigh), pr.parse_fdb(fdb))


def plan(peers, cur=None, vxlan=None):
    vxlan = copy.deepcopy(VXLAN) if vxlan is None else vxlan
    desired = pr.desired_state(peers, "eth0", vxlan)
    routes, link, addrs, neigh, fdb = cur or current()
    return pr.plan_present(desired, routes, link, addrs, neigh, fdb)


EMPTY = (pr.parse_routes(ROUTES_V4[:1] + ROUTES_V4[3:]), None, [], {}, [])


def test_programmed_node_needs_nothing():
    p = plan([NODE2, NODE3])
    assert p.actions == [] and not p.changed
    assert p.ip_pre == p.fdb == p.ip_post == []


def test_fresh_node_creates_device_then_neigh_fdb_then_routes():
    p = plan([NODE2, NODE3], cur=EMPTY)
    assert p.actions == [
        "create vxlan device flatnet.1 (vni 1, port 8472, local 192.168.50.11, dev eth0, "
        "address 0e:11:22:33:44:55, mtu 1450)",
        "add address 10.244.0.0/32 dev flatnet.1",
        "add neighbour 10.244.2.0 lladdr 0e:aa:00:00:00:13 dev flatnet.1",
        "add fdb 0e:aa:00:00:00:13 dst 192.168.60.13 dev flatnet.1",
        "add route 10.244.1.0/24 via 192.168.50.12 dev eth0",
        "add route 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink",
    ]
    assert p.ip_pre[0] == ["link", "add", "flatnet.1", "address", "0e:11:22:33:44:55", "mtu", "1450",
                           "type", "vxlan", "id", "1", "local", "192.168.50.11", "dev", "eth0",
                           "dstport", "8472", "nolearning"]
    assert p.ip_pre[1] == ["link", "set", "flatnet.1", "alias", "flatnet", "up"]
    assert p.ip_pre[-1] == ["neigh", "replace", "10.244.2.0", "lladdr", "0e:aa:00:00:00:13", "dev", "flatnet.1",
                            "nud", "permanent"]
    assert p.fdb == [["fdb", "replace", "0e:aa:00:00:00:13", "dev", "flatnet.1", "dst", "192.168.60.13",
                      "self", "permanent"]]
    assert p.ip_post == [
        ["route", "replace", "10.244.1.0/24", "via", "192.168.50.12", "dev", "eth0", "proto", "157"],
        ["route", "replace", "10.244.2.0/24", "via", "10.244.2.0", "dev", "flatnet.1", "onlink", "proto", "157"],
    ]


def test_direct_only_has_no_device():
    p = plan([NODE2], cur=EMPTY)
    assert p.actions == ["add route 10.244.1.0/24 via 192.168.50.12 dev eth0"]


def test_removed_vxlan_peer_goes_with_the_device_and_foreign_routes_stay():
    p = plan([NODE2])
    assert p.actions == ["delete vxlan device flatnet.1"]
    assert p.ip_post == [["link", "del", "flatnet.1"]]
    assert not any("10.99.0.0" in " ".join(a) for a in p.ip_pre + p.ip_post)


def test_removed_peer_route_neigh_fdb_are_deleted_routes_first():
    other = dict(NODE3, name="node4", underlay_ip="192.168.60.14", pod_cidrs=["10.244.3.0/24"],
                 vtep_ips=["10.244.3.0"], vtep_mac="0e:aa:00:00:00:14")
    p = plan([NODE2, other])
    assert p.actions == [
        "delete route 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink",
        "add neighbour 10.244.3.0 lladdr 0e:aa:00:00:00:14 dev flatnet.1",
        "delete neighbour 10.244.2.0 dev flatnet.1",
        "delete fdb 0e:aa:00:00:00:13 dst 192.168.60.13 dev flatnet.1",
        "add fdb 0e:aa:00:00:00:14 dst 192.168.60.14 dev flatnet.1",
        "add route 10.244.3.0/24 via 10.244.3.0 dev flatnet.1 onlink",
    ]
    assert p.ip_pre[0] == ["route", "del", "10.244.2.0/24", "proto", "157"]


def test_wrong_entries_are_replaced():
    neigh = [{"dst": "10.244.2.0", "lladdr": "0e:aa:00:00:00:99", "state": ["PERMANENT"]}]
    fdb = [{"mac": "0e:aa:00:00:00:13", "dst": "192.168.60.99", "flags": ["self"], "state": "permanent"}]
    routes = [dict(r) for r in ROUTES_V4]
    routes[1]["gateway"] = "192.168.50.99"
    p = plan([NODE2, NODE3], cur=current(routes=routes, neigh=neigh, fdb=fdb))
    assert p.actions == [
        "replace neighbour 10.244.2.0 lladdr 0e:aa:00:00:00:13 dev flatnet.1",
        "delete fdb 0e:aa:00:00:00:13 dst 192.168.60.99 dev flatnet.1",
        "add fdb 0e:aa:00:00:00:13 dst 192.168.60.13 dev flatnet.1",
        "replace route 10.244.1.0/24 via 192.168.50.99 dev eth0 with 10.244.1.0/24 via 192.168.50.12 dev eth0",
    ]


def test_non_permanent_entries_are_made_permanent_and_learned_ones_left_alone():
    neigh = NEIGH + [{"dst": "10.244.7.7", "state": ["FAILED"]}]
    neigh[0] = dict(neigh[0], state=["REACHABLE"])
    fdb = [dict(FDB[0], state="")]
    p = plan([NODE2, NODE3], cur=current(neigh=neigh, fdb=fdb))
    assert p.actions == ["replace neighbour 10.244.2.0 lladdr 0e:aa:00:00:00:13 dev flatnet.1",
                         "add fdb 0e:aa:00:00:00:13 dst 192.168.60.13 dev flatnet.1"]


def test_device_fixed_in_place_or_recreated():
    link = json.loads(json.dumps(LINK))
    link["mtu"], link["address"], link["flags"] = 1500, "0e:00:00:00:00:01", ["BROADCAST"]
    p = plan([NODE2, NODE3], cur=current(link=link))
    assert p.actions == ["set flatnet.1 address 0e:11:22:33:44:55", "set flatnet.1 mtu 1450", "set flatnet.1 up"]

    link = json.loads(json.dumps(LINK))
    link["linkinfo"]["info_data"]["port"] = 4789
    p = plan([NODE2, NODE3], cur=current(link=link))
    assert p.actions[0].startswith("recreate vxlan device flatnet.1 (port 4789 -> 8472) as (vni 1")
    assert p.ip_pre[0] == ["link", "del", "flatnet.1"]
    # Recreating takes the neighbour, FDB entry, address and route along: all are added again.
    assert "add route 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink" in p.actions
    assert "add fdb 0e:aa:00:00:00:13 dst 192.168.60.13 dev flatnet.1" in p.actions
    assert "add address 10.244.0.0/32 dev flatnet.1" in p.actions
    assert not any(a.startswith("delete") for a in p.actions)


def test_extra_address_on_device_is_removed():
    addrs = json.loads(json.dumps(ADDRS))
    addrs[0]["addr_info"].append({"family": "inet", "local": "10.1.1.1", "prefixlen": 24, "scope": "global"})
    assert plan([NODE2, NODE3], cur=current(addrs=addrs)).actions == ["delete address 10.1.1.1/24 dev flatnet.1"]


def test_device_not_ours_is_refused_and_never_deleted():
    link = dict(LINK, ifalias=None)
    with pytest.raises(pr.PeersError, match="not flatnet's"):
        plan([NODE2, NODE3], cur=current(link=link))
    assert plan([NODE2], cur=current(link=link, neigh=[], fdb=[], addrs=[])).actions == [
        "delete route 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink"]
    routes, dev = current(link=link)[:2]
    absent = pr.plan_absent(routes, dev)
    assert absent.ip_post == [] and "delete vxlan device flatnet.1" not in absent.actions


def test_foreign_route_to_peer_cidr_is_refused():
    routes = ROUTES_V4 + [{"dst": "10.244.5.0/24", "dev": "eth0", "protocol": "boot", "flags": []}]
    other = dict(NODE2, name="node5", pod_cidrs=["10.244.5.0/24"])
    with pytest.raises(pr.PeersError, match=r"10.244.5.0/24 \(proto boot\)"):
        plan([NODE2, NODE3, other], cur=current(routes=routes))


def test_duplicate_pod_cidr_is_refused():
    with pytest.raises(pr.PeersError, match="both node2 and node9"):
        pr.desired_state([NODE2, dict(NODE2, name="node9")], "eth0", VXLAN)


def test_absent_deletes_all_our_routes_and_the_device():
    routes, dev = current()[:2]
    p = pr.plan_absent(routes, dev)
    assert p.actions == ["delete route 10.244.1.0/24 via 192.168.50.12 dev eth0",
                         "delete route 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink",
                         "delete vxlan device flatnet.1"]
    assert pr.plan_absent(pr.parse_routes(ROUTES_V4[:1]), None).actions == []


def test_direct_ipv6_pod_cidr_over_ipv4_underlay_is_skipped():
    dual = dict(NODE2, pod_cidrs=["10.244.1.0/24", "fd00:10:244:1::/64"])
    desired = pr.desired_state([dual], "eth0", VXLAN)
    assert list(desired["routes"]) == ["10.244.1.0/24"]
    assert "fd00:10:244:1::/64" in desired["skipped"][0] and "vxlan" in desired["skipped"][0]


def test_ipv4_pod_cidr_over_ipv6_underlay_uses_via_inet6():
    v6 = dict(NODE2, underlay_ip="fd00:50::12", pod_cidrs=["10.244.1.0/24", "fd00:10:244:1::/64"])
    desired = pr.desired_state([v6], "eth0", VXLAN)
    assert desired["routes"]["10.244.1.0/24"].replace_argv() == [
        "route", "replace", "10.244.1.0/24", "via", "inet6", "fd00:50::12", "dev", "eth0", "proto", "157"]
    assert desired["routes"]["fd00:10:244:1::/64"].text() == "fd00:10:244:1::/64 via fd00:50::12 dev eth0"
    # Recorded form of such a route: via {family, host}; it matches, so nothing to do.
    routes = [{"dst": "10.244.1.0/24", "via": {"family": "inet6", "host": "fd00:50::12"}, "dev": "eth0",
               "protocol": "157", "flags": []},
              {"dst": "fd00:10:244:1::/64", "gateway": "fd00:50::12", "dev": "eth0", "protocol": "157",
               "metric": 1024, "flags": [], "pref": "medium"}]
    assert pr.plan_present(desired, pr.parse_routes(routes), None, [], {}, []).actions == []


def test_dual_stack_vxlan_peer():
    dual = dict(NODE3, pod_cidrs=["10.244.2.0/24", "fd00:10:244:2::/64"], vtep_ips=["10.244.2.0", "fd00:10:244:2::"])
    vx = dict(VXLAN, addresses=["10.244.0.0/32", "fd00:10:244::/128"])
    p = plan([dual], cur=EMPTY, vxlan=vx)
    assert ["addr", "add", "fd00:10:244::/128", "dev", "flatnet.1", "nodad"] in p.ip_pre
    assert "add neighbour fd00:10:244:2:: lladdr 0e:aa:00:00:00:13 dev flatnet.1" in p.actions
    assert "add route fd00:10:244:2::/64 via fd00:10:244:2:: dev flatnet.1 onlink" in p.actions
    assert p.fdb == [["fdb", "replace", "0e:aa:00:00:00:13", "dev", "flatnet.1", "dst", "192.168.60.13",
                      "self", "permanent"]]


def test_host_route_and_duplicate_metric_parsing():
    routes = [{"dst": "10.244.9.9", "gateway": "192.168.50.12", "dev": "eth0", "protocol": "157", "flags": []},
              {"dst": "10.244.9.9", "gateway": "192.168.50.13", "dev": "eth0", "protocol": "157", "metric": 5,
               "flags": []}]
    ours, extra, foreign = pr.parse_routes(routes)
    assert list(ours) == ["10.244.9.9/32"] and foreign == {}
    assert extra[0].delete_argv() == ["route", "del", "10.244.9.9/32", "proto", "157", "metric", "5"]


@pytest.mark.parametrize("gateway,ok", [("192.168.50.12", True), ("192.168.60.13", False)])
def test_direct_peer_must_be_on_link(gateway, ok):
    peer = dict(NODE2, underlay_ip=gateway)
    desired = pr.desired_state([peer], "eth0", VXLAN)
    if ok:
        pr.check_direct_on_link(desired["direct_gateways"], ROUTES_V4, "eth0")
    else:
        # Reachable through the default gateway is not on-link.
        with pytest.raises(pr.PeersError, match=r"node2 \(192.168.60.13\).*vxlan or auto"):
            pr.check_direct_on_link(desired["direct_gateways"], ROUTES_V4, "eth0")


def test_vxlan_needs_local_ip_and_mac():
    with pytest.raises(pr.PeersError, match="vxlan.local_ip, vxlan.mac"):
        pr.desired_state([NODE3], "eth0", {"device": "flatnet.1"})


def test_render_is_stable_for_diff():
    routes, dev, addrs, neigh, fdb = current()
    before = pr.render_current(routes, dev, addrs, neigh, fdb)
    after = pr.render_desired(pr.desired_state([NODE2, NODE3], "eth0", VXLAN))
    assert before == after
    assert "route 10.244.1.0/24 via 192.168.50.12 dev eth0" in after


# --- the module, with run_command answering from the recordings ---------------------------
# link=None means "no vxlan device", so the default needs its own marker.
_RECORDED = object()


class FakeKernel:
    def __init__(self, routes4=None, link=_RECORDED):
        routes4 = copy.deepcopy(ROUTES_V4) if routes4 is None else routes4
        link = copy.deepcopy(LINK) if link is _RECORDED else link
        self.outputs = {
            ("ip", "-json", "-4", "route", "show", "table", "main"): routes4,
            ("ip", "-json", "-6", "route", "show", "table", "main"): [],
            ("ip", "-json", "addr", "show", "dev", "flatnet.1"): ADDRS,
            ("ip", "-json", "neigh", "show", "dev", "flatnet.1"): NEIGH,
            ("bridge", "-json", "fdb", "show", "dev", "flatnet.1"): FDB,
        }
        self.link = link
        self.writes = []

    def __call__(self, _module, cmd, data=None, **_kw):
        argv = tuple(["ip" if cmd[0].endswith("/ip") else "bridge"] + list(cmd[1:]))
        if "-batch" in argv:
            self.writes.append((argv, data))
            return 0, "", ""
        if argv == ("ip", "-json", "-details", "link", "show", "dev", "flatnet.1"):
            return (0, json.dumps([self.link]), "") if self.link else (1, "", "Device does not exist")
        return 0, json.dumps(self.outputs[argv]), ""


def run_module(args, kernel, check_mode=False):
    args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=True)
    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, "run_command", autospec=True, side_effect=kernel), \
            mock.patch.object(basic.AnsibleModule, "get_bin_path", side_effect=lambda b, *a, **k: "/sbin/" + b), \
            mock.patch.object(peers_module.flatnet_state, "save") as save:
        with pytest.raises(SystemExit):
            peers_module.main()
    return save


ARGS = {"underlay_interface": "eth0", "peers": [NODE2, NODE3], "vxlan": VXLAN, "state_dir": "/nonexistent"}


def test_module_idempotent_on_programmed_node(capsys):
    kernel = FakeKernel()
    run_module(ARGS, kernel)
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is False and out["actions"] == [] and kernel.writes == []
    assert out["diff"]["before"] == out["diff"]["after"]
    assert [p["name"] for p in out["peers"]] == ["node2", "node3"]


def test_module_check_mode_writes_nothing(capsys):
    kernel = FakeKernel(routes4=ROUTES_V4[:1] + ROUTES_V4[3:], link=None)
    save = run_module(ARGS, kernel, check_mode=True)
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is True and len(out["actions"]) == 6
    assert kernel.writes == [] and not save.called


def test_module_applies_in_three_batches(capsys):
    kernel = FakeKernel(routes4=ROUTES_V4[:1] + ROUTES_V4[3:], link=None)
    run_module(ARGS, kernel)
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is True
    assert [w[0][0] for w in kernel.writes] == ["ip", "bridge", "ip"]
    assert kernel.writes[1][1] == "fdb replace 0e:aa:00:00:00:13 dev flatnet.1 dst 192.168.60.13 self permanent\n"
    assert kernel.writes[2][1].splitlines()[-1] == \
        "route replace 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink proto 157"


def test_module_fails_before_changing_for_off_link_direct_peer(capsys):
    kernel = FakeKernel()
    run_module(dict(ARGS, peers=[dict(NODE3, mode="direct")]), kernel)
    out = json.loads(capsys.readouterr().out)
    assert out["failed"] is True and "node3 (192.168.60.13)" in out["msg"]
    assert kernel.writes == []


def test_renamed_device_recorded_old_one_goes_first_with_its_routes():
    # flatnet.1 (recorded, marked) is renamed to flatnet.9 with the same VNI and port: the old
    # one must be deleted before the new one is made (the kernel allows the VNI once), and the
    # routes it carried are not deleted separately (they go with it) but re-added on the new one.
    routes, old, _addrs, _neigh, _fdb = current()
    desired = pr.desired_state([NODE2, NODE3], "eth0", dict(VXLAN, device="flatnet.9"))
    p = pr.plan_present(desired, routes, None, [], {}, [], retire=[old])
    assert p.ip_pre[0] == ["link", "del", "flatnet.1"]
    assert p.ip_pre[1][:3] == ["link", "add", "flatnet.9"]
    assert p.actions[0] == "delete old vxlan device flatnet.1 (now flatnet.9)"
    assert not any(a.startswith("delete route") for a in p.actions), p.actions
    assert "add route 10.244.2.0/24 via 10.244.2.0 dev flatnet.9 onlink" in p.actions
    assert ["route", "del", "10.244.2.0/24", "proto", "157"] not in p.ip_pre
    # Without a vxlan peer, the old device still goes.
    p = pr.plan_present(pr.desired_state([NODE2], "eth0", dict(VXLAN, device="flatnet.9")),
                        routes, None, [], {}, [], retire=[old])
    assert p.actions == ["delete old vxlan device flatnet.1"]


def test_changed_vni_or_port_recreates_our_device():
    for key, value, why in (("vni", 7, "vni 1 -> 7"), ("port", 4789, "port 8472 -> 4789")):
        p = plan([NODE2, NODE3], vxlan=dict(VXLAN, **{key: value}))
        assert p.ip_pre[0] == ["link", "del", "flatnet.1"]
        assert p.actions[0].startswith(f"recreate vxlan device flatnet.1 ({why})"), p.actions


def test_absent_deletes_only_the_given_marked_devices():
    routes, dev = current()[:2]
    other = dict(dev, name="flatnet.9")
    p = pr.plan_absent(routes, [dev, other, dict(other, name="x", ours=False)])
    assert p.ip_post == [["link", "del", "flatnet.1"], ["link", "del", "flatnet.9"]]
    assert pr.plan_absent(routes, []).ip_post == []


def test_recorded_devices():
    assert pr.recorded_devices({}) == []
    assert pr.recorded_devices({"device": None, "peers": []}) == []
    assert pr.recorded_devices({"device": "b", "retired": ["a", "b", None]}) == ["a", "b"]
