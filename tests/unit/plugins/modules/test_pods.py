# SPDX-License-Identifier: GPL-3.0-or-later
"""The pods reconcile logic on recorded ``ip -json`` outputs: desired + observed -> a plan."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils.names import bridge_mac, veth_name
from ansible_collections.flatnet.cluster.plugins.module_utils.reconcile import Batch
from ansible_collections.flatnet.cluster.plugins.modules import pods as m

BR_MAC = bridge_mac("cni0", ["10.244.0.1/24"])
BRIDGE = {"ifindex": 2, "ifname": "cni0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
          "mtu": 1450, "address": BR_MAC, "ifalias": "flatnet", "linkinfo": {"info_kind": "bridge"}}
VETH = veth_name("web")
# Recorded from `ip -json -details link show` on the node and `ip -n web -json addr show`.
HOST = {"ifindex": 7, "link_index": 2, "ifname": VETH, "flags": ["BROADCAST", "MULTICAST", "UP",
        "LOWER_UP"], "mtu": 1450, "master": "cni0", "operstate": "UP", "link_netnsid": 0,
        "ifalias": "flatnet pod web", "linkinfo": {"info_kind": "veth", "info_slave_kind": "bridge"}}
POD_LINKS = [
    {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "mtu": 65536,
     "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}]},
    {"ifindex": 2, "link_index": 7, "ifname": "eth0", "flags": ["BROADCAST", "MULTICAST", "UP",
     "LOWER_UP"], "mtu": 1450, "address": m.pod_mac("web"), "operstate": "UP", "link_netnsid": 0,
     "addr_info": [{"family": "inet", "local": "10.244.0.2", "prefixlen": 24, "scope": "global"},
                   {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"}]},
]
ROUTES4 = [{"dst": "default", "gateway": "10.244.0.1", "dev": "eth0", "protocol": "157", "flags": []}]
# `ip -n web -json neigh show nud permanent` and `ip -json neigh show dev cni0 nud permanent`.
POD_NEIGH = [{"dst": "10.244.0.1", "dev": "eth0", "lladdr": BR_MAC, "state": ["PERMANENT"],
              "protocol": "157"}]
BRIDGE_NEIGH = {"10.244.0.2": {"dst": "10.244.0.2", "lladdr": m.pod_mac("web"),
                               "state": ["PERMANENT"], "protocol": "157"}}
GW = {4: "10.244.0.1"}
WANT = {"web": {"ips": ["10.244.0.2/24"], "argv": None}}
RECORD = {"pods": {"web": {"ips": ["10.244.0.2/24"], "veth": VETH, "command": None, "pid": None,
                           "netns_inode": 4026532613, "workload": None}}}
# The identity of a workload tree started in web's namespace (module_utils/workload.py).
IDENT = {"sid": 1234, "start_time": 5000, "boot_id": "b", "netns_inode": 4026532613, "token": "t"}


def running(obs, ident=None, pids=(1234,)):
    """``obs`` with web's workload tree alive."""
    obs["workloads"]["web"] = True
    obs["identities"] = {"web": ident or IDENT}
    obs["trees"] = {"web": list(pids)}
    return obs


def observed_in_sync():
    return {
        "netns": {"web": 4026532613},
        "links": {"cni0": copy.deepcopy(BRIDGE), VETH: copy.deepcopy(HOST)},
        "pods": {"web": {"links": {l["ifname"]: copy.deepcopy(l) for l in POD_LINKS},
                         "routes": {4: copy.deepcopy(ROUTES4)},
                         "neigh": copy.deepcopy(POD_NEIGH)}},
        "workloads": {"web": False},
        "bridge_neigh": copy.deepcopy(BRIDGE_NEIGH),
    }


def node_batch(plan):
    """The node's batch (namespaces, host veths, bridge neighbours); an empty one when the
    plan has none."""
    found = [b for b in plan.batches if b.netns is None and not b.force]
    assert len(found) <= 1
    return found[0] if found else Batch()


def node_lines(plan):
    """The node batch's lines after its namespace lines (those come first)."""
    lines = node_batch(plan).lines
    rest = [line for line in lines if line[0] != "netns"]
    assert lines[len(lines) - len(rest):] == rest
    return rest


def netns(plan, verb):
    """Names of the node batch's ``netns add`` or ``netns del`` lines."""
    return [line[2] for line in node_batch(plan).lines if line[:2] == ["netns", verb]]


def pod_lines(plan):
    """{pod: lines} of the batches that run inside the pods, side by side."""
    pods = {b.netns: b.lines for b in plan.batches if b.parallel}
    assert all(b.netns and b.tool == "ip" and not b.force for b in plan.batches if b.parallel)
    assert len(pods) == len([b for b in plan.batches if b.parallel])
    return pods


def stale(plan):
    """The host veths deleted (failure allowed, then waited for) before the node batch."""
    found = [b for b in plan.batches if b.force]
    assert len(found) <= 1
    if not found:
        return []
    veths = [line[2] for line in found[0].lines]
    assert found[0].lines == [["link", "del", v] for v in veths] and not found[0].check
    assert found[0].wait_gone == veths and found[0].netns is None
    return veths


def wait_gone(plan):
    return node_batch(plan).wait_gone


def run(observed, desired=None, record=None, prune=True):
    return m.plan(WANT if desired is None else desired, observed,
                  RECORD if record is None else record, "cni0", 1450, GW, prune=prune)


def test_in_sync_means_no_action():
    plan = run(observed_in_sync())
    assert plan.actions == []
    assert not m.needs_change(plan)
    assert node_lines(plan) == [] and pod_lines(plan) == {} and netns(plan, "add") == []


def test_in_sync_workload_running_no_action():
    obs = running(observed_in_sync())
    rec = copy.deepcopy(RECORD)
    rec["pods"]["web"].update(command=["sleep", "100"], pid=1234)
    plan = run(obs, {"web": {"ips": ["10.244.0.2/24"], "argv": ["sleep", "100"]}}, rec)
    assert plan.actions == []


def test_new_pod_from_nothing():
    obs = {"netns": {}, "links": {"cni0": BRIDGE}, "pods": {}, "workloads": {}}
    plan = run(obs, record={"pods": {}})
    assert netns(plan, "add") == ["web"]
    assert node_lines(plan)[0] == ["link", "add", VETH, "mtu", 1450, "type", "veth", "peer", "name",
                                   "eth0", "address", m.pod_mac("web"), "mtu", 1450, "netns", "web"]
    assert ["link", "set", VETH, "alias", "flatnet pod web"] in node_lines(plan)
    assert ["link", "set", VETH, "master", "cni0", "up"] in node_lines(plan)
    assert pod_lines(plan)["web"] == [
        ["link", "set", "lo", "up"],
        ["addr", "add", "10.244.0.2/24", "dev", "eth0"],
        ["link", "set", "eth0", "up"],
        ["route", "replace", "default", "via", "10.244.0.1", "dev", "eth0", "proto", 157],
        ["neigh", "replace", "10.244.0.1", "lladdr", BR_MAC, "dev", "eth0", "nud", "permanent",
         "proto", 157],
    ]
    assert node_lines(plan)[-1] == ["neigh", "replace", "10.244.0.2", "lladdr", m.pod_mac("web"),
                                    "dev", "cni0", "nud", "permanent", "proto", 157]
    assert plan.actions == ["add pod web", "web: add address 10.244.0.2/24"]


def test_dual_stack_pod_uses_nodad_and_both_routes():
    obs = {"netns": {}, "links": {"cni0": BRIDGE}, "pods": {}, "workloads": {}}
    plan = m.plan({"web": {"ips": ["10.244.0.2/24", "fd00:10::2/64"], "argv": None}}, obs,
                  {"pods": {}}, "cni0", 1450, {4: "10.244.0.1", 6: "fd00:10::1"})
    lines = pod_lines(plan)["web"]
    assert ["addr", "add", "fd00:10::2/64", "dev", "eth0", "nodad"] in lines
    assert ["route", "replace", "default", "via", "fd00:10::1", "dev", "eth0", "proto", 157] in lines


def test_wrong_and_extra_address_and_route_readded():
    obs = observed_in_sync()
    eth0 = obs["pods"]["web"]["links"]["eth0"]
    eth0["addr_info"] = [{"family": "inet", "local": "10.244.0.9", "prefixlen": 24, "scope": "global"}]
    plan = run(obs)
    assert pod_lines(plan)["web"] == [
        ["addr", "del", "10.244.0.9/24", "dev", "eth0"],
        ["addr", "add", "10.244.0.2/24", "dev", "eth0"],
        ["route", "replace", "default", "via", "10.244.0.1", "dev", "eth0", "proto", 157],
    ]
    assert "web: remove address 10.244.0.9/24" in plan.actions


def test_missing_route_only():
    obs = observed_in_sync()
    obs["pods"]["web"]["routes"][4] = []
    plan = run(obs)
    assert pod_lines(plan)["web"] == [["route", "replace", "default", "via", "10.244.0.1", "dev",
                                       "eth0", "proto", 157]]


def test_veth_out_of_bridge_down_wrong_mtu():
    obs = observed_in_sync()
    host = obs["links"][VETH]
    host.update(mtu=1500, flags=["BROADCAST"])
    del host["master"]
    plan = run(obs)
    assert node_lines(plan) == [["link", "set", VETH, "mtu", 1450, "master", "cni0", "up"]]
    assert netns(plan, "add") == []


def test_deleted_veth_is_recreated():
    obs = observed_in_sync()
    del obs["links"][VETH]
    del obs["pods"]["web"]["links"]["eth0"]
    plan = run(obs)
    assert netns(plan, "add") == []
    assert node_lines(plan)[0][:3] == ["link", "add", VETH]
    assert "web: add veth " + VETH in plan.actions


def test_batches_run_eth0_removal_stale_veth_node_then_pods_side_by_side():
    # web's eth0 is paired with another veth, web's host veth with nothing: both go, then the
    # node batch (gone's namespace, web's new veth) and the pods' batches, side by side.
    obs = observed_in_sync()
    obs["pods"]["web"]["links"]["eth0"]["link_index"] = 9
    obs["netns"]["gone"] = 4026532620
    rec = copy.deepcopy(RECORD)
    rec["pods"]["gone"] = dict(rec["pods"]["web"], ips=["10.244.0.9/24"], veth=veth_name("gone"))
    plan = run(obs, record=rec)
    shape = [(b.tool, b.netns, b.force, b.check, b.parallel, b.wait_gone) for b in plan.batches]
    assert shape == [("ip", "web", False, True, False, []), ("ip", None, True, False, False, [VETH]),
                     ("ip", None, False, True, False, []), ("ip", "web", False, True, True, [])]
    assert plan.batches[0].lines == [["link", "del", "eth0"]]
    assert plan.batches[1].lines == [["link", "del", VETH]]
    assert plan.batches[2].lines[:2] == [
        ["netns", "del", "gone"],
        ["link", "add", VETH, "mtu", 1450, "type", "veth", "peer", "name", "eth0", "address",
         m.pod_mac("web"), "mtu", 1450, "netns", "web"]]
    assert plan.batches[3].lines[0] == ["addr", "add", "10.244.0.2/24", "dev", "eth0"]
    assert plan.actions[:4] == ["remove pod gone", "web: delete eth0 (not paired with " + VETH + ")",
                                "web: add veth " + VETH, "web: delete stale " + VETH]


def test_in_sync_plan_has_no_batches():
    plan = run(observed_in_sync())
    assert plan.batches == [] and plan.errors == [] and not plan.changed


def test_netns_removed_by_hand_keeps_stale_host_veth_and_workload():
    # The workload holds the old namespace alive, so the host veth survives the deletion.
    obs = observed_in_sync()
    del obs["netns"]["web"]
    del obs["pods"]["web"]
    running(obs)
    rec = copy.deepcopy(RECORD)
    rec["pods"]["web"].update(command=["sleep", "100"], pid=1234)
    plan = run(obs, {"web": {"ips": ["10.244.0.2/24"], "argv": ["sleep", "100"]}}, rec)
    assert netns(plan, "add") == ["web"]
    assert stale(plan) == [VETH]
    assert plan.stop == [("web", IDENT)]
    assert plan.start == ["web"]
    assert plan.sweep == [], "a pod that stays is never swept"


def test_dead_netns_file_is_replaced():
    obs = {"netns": {"web": None}, "links": {"cni0": BRIDGE}, "pods": {}, "workloads": {}}
    plan = run(obs)
    assert netns(plan, "del") == ["web"] and netns(plan, "add") == ["web"]


def test_interrupted_run_netns_without_veth():
    obs = observed_in_sync()
    del obs["links"][VETH]
    obs["pods"]["web"]["links"] = {"lo": {"ifname": "lo", "flags": ["LOOPBACK"]}}
    obs["pods"]["web"]["routes"] = {4: []}
    plan = run(obs)
    assert netns(plan, "add") == []
    assert node_lines(plan)[0][:3] == ["link", "add", VETH]
    assert pod_lines(plan)["web"][0] == ["link", "set", "lo", "up"]


def test_foreign_netns_is_refused():
    obs = observed_in_sync()
    del obs["links"][VETH]
    plan = run(obs, record={"pods": {}})
    assert plan.errors and "not made by flatnet.cluster" in plan.errors[0]


def test_unrecorded_but_marked_pair_is_adopted():
    plan = run(observed_in_sync(), record={"pods": {}})
    assert plan.errors == []
    assert plan.adopt == ["web"]


def test_foreign_link_with_veth_name_is_refused():
    obs = {"netns": {}, "links": {"cni0": BRIDGE, VETH: dict(HOST, ifalias="someone")},
           "pods": {}, "workloads": {}}
    plan = run(obs, record={"pods": {}})
    assert "without the marker" in plan.errors[0]


def test_prune_removes_recorded_undeclared_pod():
    obs = running(observed_in_sync(), pids=(1234, 1240))
    obs["others"] = {"web": [(1300, "bash")]}
    rec = copy.deepcopy(RECORD)
    rec["pods"]["web"].update(command=["sleep", "1"], pid=1234, workload=IDENT)
    plan = run(obs, desired={}, record=rec)
    assert netns(plan, "del") == ["web"]
    assert wait_gone(plan) == [VETH]
    assert plan.stop == [("web", IDENT)]
    # Whatever else runs in the pod goes with it, named in the actions.
    assert plan.sweep == [("web", 4026532613)]
    assert plan.actions[:3] == ["remove pod web", "web: stop workload (pids 1234 1240)",
                                "web: stop 1 other process(es) in the pod (1300 bash)"]
    assert run(obs, desired={}, record=rec, prune=False).actions == []


def test_prune_of_a_pod_whose_netns_is_gone_sweeps_nothing():
    obs = running(observed_in_sync())
    del obs["netns"]["web"]
    del obs["pods"]["web"]
    rec = copy.deepcopy(RECORD)
    rec["pods"]["web"].update(command=["sleep", "1"], pid=1234, workload=IDENT)
    plan = run(obs, desired={}, record=rec)
    # The workload holds the old namespace: it is stopped by its identity; nothing is swept.
    assert plan.stop == [("web", IDENT)] and plan.sweep == []


def test_unrecorded_netns_never_pruned():
    obs = observed_in_sync()
    obs["netns"]["other"] = 5
    plan = run(obs)
    assert plan.actions == [] and netns(plan, "del") == []


def test_workload_dead_restart_and_command_change():
    obs = observed_in_sync()
    obs["identities"] = {"web": IDENT}
    obs["trees"] = {"web": []}
    rec = copy.deepcopy(RECORD)
    rec["pods"]["web"].update(command=["sleep", "100"], pid=1234, workload=IDENT)
    want = {"web": {"ips": ["10.244.0.2/24"], "argv": ["sleep", "100"]}}
    plan = run(obs, want, rec)  # workload not running
    assert plan.start == ["web"] and plan.stop == []
    assert plan.actions == ["web: restart workload sleep 100 (was dead)"]
    assert plan.warnings == []
    # Something else runs in the pod while the tree is gone: said, since a daemon that left the
    # tree would be started again on every run.
    obs["others"] = {"web": [(77, "nginx")]}
    plan = run(obs, want, rec)
    assert "77 nginx" in plan.warnings[0] and "foreground" in plan.warnings[0]
    obs["others"] = {}
    running(obs)
    plan = run(obs, {"web": {"ips": ["10.244.0.2/24"], "argv": ["sleep", "200"]}}, rec)
    assert plan.stop == [("web", IDENT)] and plan.start == ["web"]
    assert plan.actions == ["web: stop workload (pid 1234; command changed)", "web: start workload sleep 200"]
    plan = run(obs, WANT, rec)
    assert plan.stop and plan.start == []
    assert plan.actions == ["web: stop workload (pid 1234; command removed)"]
    # A tree running in another namespace than the pod's (the pod's netns was replaced)
    running(obs, ident=dict(IDENT, netns_inode=42))
    plan = run(obs, want, rec)
    assert plan.stop and plan.start == ["web"]
    assert "web: stop workload (pid 1234; netns replaced)" in plan.actions


def test_observe_workloads_from_one_scan(monkeypatch):
    snap = [
        {"pid": 1234, "comm": "sleep", "session": 1234, "start_time": 5000, "netns": 4026532613},
        {"pid": 1300, "comm": "bash", "session": 1300, "start_time": 6000, "netns": 4026532613},
        {"pid": 1400, "comm": "sleep", "session": 1234, "start_time": 5001, "netns": 99},
    ]
    monkeypatch.setattr(m.workload, "members", lambda ident, s: [1234] if ident else [])
    obs = {"netns": {"web": 4026532613}, "workloads": {}}
    record = {"pods": {"web": dict(RECORD["pods"]["web"], command=["sleep", "1"], pid=1234, workload=IDENT)}}
    m.observe_workloads(obs, {}, record, snap)
    assert obs["workloads"] == {"web": True} and obs["trees"] == {"web": [1234]}
    assert obs["others"] == {"web": [(1300, "bash")]}


def test_missing_bridge_is_an_error():
    obs = observed_in_sync()
    del obs["links"]["cni0"]
    assert "run flatnet.cluster.node first" in run(obs).errors[0]


@pytest.mark.parametrize("pods, msg", [
    ([{"name": "Web", "ips": []}], "DNS label"),
    ([{"name": "a.b", "ips": []}], "DNS label"),
    ([{"name": "a", "ips": ["10.0.0.2"]}], "no prefix"),
    ([{"name": "a"}, {"name": "a"}], "twice"),
    ([{"name": "web\n", "ips": []}], "DNS label"),
    ([{"name": "a", "command": "sh -c 'sleep 1"}], "does not split"),
    ([{"name": "a", "command": ["sleep", "1\x00"]}], "NUL"),
])
def test_bad_requests(pods, msg):
    with pytest.raises(m.PodsError, match=msg):
        m.desired_pods(pods)


def test_command_string_is_split_not_shelled():
    got = m.desired_pods([{"name": "a", "ips": ["10.0.0.2/24"], "command": "sh -c 'echo $HOME; x'"}])
    assert got["a"]["argv"] == ["sh", "-c", "echo $HOME; x"]


def test_diff_text_equal_when_in_sync():
    obs = observed_in_sync()
    before = m.describe_observed({"web"}, obs, RECORD, "cni0", GW)
    after = m.describe_desired(WANT, "cni0", 1450, GW)
    veth = m.veth_name("web")
    assert before == after == f"pod web: ips 10.244.0.2/24; veth {veth}; mtu 1450; link up in cni0; gateway 10.244.0.1\n"


def test_pod_mac_is_stable_local_unicast():
    mac = m.pod_mac("web")
    assert mac == m.pod_mac("web") != m.pod_mac("web2")
    assert int(mac.split(":", 1)[0], 16) & 0b11 == 0b10


def test_wrong_mac_is_repaired():
    obs = observed_in_sync()
    obs["pods"]["web"]["links"]["eth0"]["address"] = "02:00:00:00:00:01"
    # A new MAC flushes eth0's neighbour entries, permanent ones too: set the gateway's again.
    assert pod_lines(run(obs))["web"] == [
        ["link", "set", "eth0", "address", m.pod_mac("web")],
        ["neigh", "replace", "10.244.0.1", "lladdr", BR_MAC, "dev", "eth0", "nud", "permanent",
         "proto", 157]]


def test_missing_or_wrong_static_neighbours_are_repaired():
    obs = observed_in_sync()
    obs["pods"]["web"]["neigh"] = []
    obs["bridge_neigh"]["10.244.0.2"]["lladdr"] = "02:00:00:00:00:09"
    plan = run(obs)
    assert pod_lines(plan)["web"] == [["neigh", "replace", "10.244.0.1", "lladdr", BR_MAC, "dev",
                                       "eth0", "nud", "permanent", "proto", 157]]
    assert node_lines(plan) == [["neigh", "replace", "10.244.0.2", "lladdr", m.pod_mac("web"), "dev",
                                 "cni0", "nud", "permanent", "proto", 157]]
    assert plan.actions == [
        f"web: set static neighbour 10.244.0.1 lladdr {BR_MAC}",
        f"web: set static neighbour 10.244.0.2 lladdr {m.pod_mac('web')} on cni0"]


def test_bridge_without_the_fixed_mac_means_arp_for_the_gateway_and_a_warning():
    # Such a bridge's MAC follows its lowest port: a static entry for it would go stale.
    obs = observed_in_sync()
    obs["links"]["cni0"]["address"] = "0a:00:00:00:00:01"
    plan = run(obs)
    assert pod_lines(plan)["web"] == [["neigh", "del", "10.244.0.1", "dev", "eth0"]]
    assert node_lines(plan) == []
    assert plan.warnings == [
        f"bridge cni0 has MAC 0a:00:00:00:00:01, not the fixed {BR_MAC} that flatnet.cluster.node "
        f"gives it, so the pods resolve their gateway by ARP/ND; run flatnet.cluster.node for cni0 "
        f"to fix it"]
    obs["pods"]["web"]["neigh"] = []
    plan = run(obs)
    assert plan.actions == [] and pod_lines(plan) == {}


def test_removing_everything_does_not_warn_about_the_bridge_mac():
    # state: absent passes no gateways, so there is no fixed MAC to compare with.
    obs = observed_in_sync()
    obs["links"]["cni0"]["address"] = "0a:00:00:00:00:01"
    plan = m.plan({}, obs, RECORD, "cni0", 1450, {}, prune=True)
    assert plan.warnings == []


def test_only_our_stale_neighbour_entries_are_removed():
    obs = observed_in_sync()
    ours = {"lladdr": "0a:00:00:00:00:02", "state": ["PERMANENT"], "protocol": "157"}
    obs["bridge_neigh"]["10.244.0.7"] = dict(ours, dst="10.244.0.7")
    obs["bridge_neigh"]["10.244.0.8"] = {"dst": "10.244.0.8", "lladdr": "0a:00:00:00:00:03",
                                         "state": ["PERMANENT"]}
    obs["pods"]["web"]["neigh"].append(dict(ours, dst="10.244.0.254", dev="eth0"))
    obs["pods"]["web"]["neigh"].append({"dst": "10.244.0.253", "dev": "eth0",
                                        "lladdr": "0a:00:00:00:00:04", "state": ["PERMANENT"]})
    plan = run(obs)
    assert node_lines(plan) == [["neigh", "del", "10.244.0.7", "dev", "cni0"]]
    assert pod_lines(plan)["web"] == [["neigh", "del", "10.244.0.254", "dev", "eth0"]]
    assert sorted(plan.actions) == ["remove static neighbour 10.244.0.7 from cni0",
                                    "web: remove static neighbour 10.244.0.254"]


def test_removed_pod_loses_its_bridge_entry_unless_not_pruned():
    obs = observed_in_sync()
    assert ["neigh", "del", "10.244.0.2", "dev", "cni0"] in node_lines(run(obs, desired={}))
    assert node_lines(run(observed_in_sync(), desired={}, prune=False)) == []


def test_dual_stack_static_neighbours():
    obs = {"netns": {}, "links": {"cni0": BRIDGE}, "pods": {}, "workloads": {}}
    plan = m.plan({"web": {"ips": ["10.244.0.2/24", "fd00:10::2/64"], "argv": None}}, obs,
                  {"pods": {}}, "cni0", 1450, {4: "10.244.0.1", 6: "fd00:10::1"})
    assert ["neigh", "replace", "fd00:10::1", "lladdr", BR_MAC, "dev", "eth0", "nud",
            "permanent", "proto", 157] in pod_lines(plan)["web"]
    assert ["neigh", "replace", "fd00:10::2", "lladdr", m.pod_mac("web"), "dev", "cni0", "nud",
            "permanent", "proto", 157] in node_lines(plan)


def test_no_bridge_yet_uses_the_mac_the_node_module_will_give_it():
    obs = {"netns": {}, "links": {}, "pods": {}, "workloads": {}}
    plan = run(obs, record={"pods": {}})
    assert pod_lines(plan)["web"][-1][3:5] == ["lladdr", BR_MAC]


# --- same-node pod <-> pod static neighbours -------------------------------------------

def _pod_entry(ip, name):
    return {"dst": ip, "dev": "eth0", "lladdr": m.pod_mac(name), "state": ["PERMANENT"], "protocol": "157"}


def _two_pods_in_sync():
    """web (10.244.0.2) and db (10.244.0.3), each with the gateway's and the other's entry."""
    obs = observed_in_sync()
    db_links = copy.deepcopy(POD_LINKS)
    db_links[1].update(address=m.pod_mac("db"), link_index=8)
    db_links[1]["addr_info"][0]["local"] = "10.244.0.3"
    obs["netns"]["db"] = 4026532614
    obs["links"][veth_name("db")] = dict(copy.deepcopy(HOST), ifindex=8, ifname=veth_name("db"),
                                         ifalias="flatnet pod db")
    obs["pods"]["db"] = {"links": {l["ifname"]: l for l in db_links}, "routes": {4: copy.deepcopy(ROUTES4)},
                         "neigh": copy.deepcopy(POD_NEIGH) + [_pod_entry("10.244.0.2", "web")]}
    obs["pods"]["web"]["neigh"].append(_pod_entry("10.244.0.3", "db"))
    obs["workloads"]["db"] = False
    obs["bridge_neigh"]["10.244.0.3"] = {"dst": "10.244.0.3", "lladdr": m.pod_mac("db"),
                                         "state": ["PERMANENT"], "protocol": "157"}
    want = dict(WANT, db={"ips": ["10.244.0.3/24"], "argv": None})
    rec = copy.deepcopy(RECORD)
    rec["pods"]["db"] = dict(rec["pods"]["web"], ips=["10.244.0.3/24"], veth=veth_name("db"),
                             netns_inode=4026532614)
    return obs, want, rec


def test_pods_of_a_node_know_each_other_statically_and_in_sync_is_no_action():
    obs, want, rec = _two_pods_in_sync()
    plan = run(obs, want, rec)
    assert plan.actions == [] and pod_lines(plan) == {} and node_lines(plan) == []


def test_a_new_pod_gets_and_gives_static_entries_without_extra_action_lines():
    obs, want, rec = _two_pods_in_sync()
    want["api"] = {"ips": ["10.244.0.4/24"], "argv": None}
    plan = run(obs, want, rec)
    entry = ["nud", "permanent", "proto", 157]
    assert pod_lines(plan)["web"] == [["neigh", "replace", "10.244.0.4", "lladdr", m.pod_mac("api"), "dev", "eth0"] + entry]
    assert pod_lines(plan)["db"] == [["neigh", "replace", "10.244.0.4", "lladdr", m.pod_mac("api"), "dev", "eth0"] + entry]
    api = pod_lines(plan)["api"]
    assert ["neigh", "replace", "10.244.0.2", "lladdr", m.pod_mac("web"), "dev", "eth0"] + entry in api
    assert ["neigh", "replace", "10.244.0.3", "lladdr", m.pod_mac("db"), "dev", "eth0"] + entry in api
    assert plan.actions == ["add pod api", "api: add address 10.244.0.4/24"]


def test_a_missing_or_wrong_pod_entry_is_drift_and_repaired():
    obs, want, rec = _two_pods_in_sync()
    obs["pods"]["web"]["neigh"] = copy.deepcopy(POD_NEIGH)  # db's entry gone
    obs["pods"]["db"]["neigh"][1]["lladdr"] = "0a:00:00:00:00:09"  # web's entry wrong
    plan = run(obs, want, rec)
    assert pod_lines(plan)["web"] == [["neigh", "replace", "10.244.0.3", "lladdr", m.pod_mac("db"), "dev",
                                       "eth0", "nud", "permanent", "proto", 157]]
    assert pod_lines(plan)["db"] == [["neigh", "replace", "10.244.0.2", "lladdr", m.pod_mac("web"), "dev",
                                      "eth0", "nud", "permanent", "proto", 157]]
    assert sorted(plan.actions) == [
        f"db: set static neighbour 10.244.0.2 lladdr {m.pod_mac('web')} (pod web)",
        f"web: set static neighbour 10.244.0.3 lladdr {m.pod_mac('db')} (pod db)"]
    diff = m.describe_observed({"web", "db"}, obs, rec, "cni0", GW)
    assert "pod web: ips 10.244.0.2/24;" in diff and "static neighbours missing: 10.244.0.3 (pod db)" in diff
    assert "static neighbours missing: 10.244.0.2 (pod web)" in diff


def test_a_removed_pod_leaves_no_entry_behind_in_the_others_unless_not_pruned():
    obs, want, rec = _two_pods_in_sync()
    del want["db"]
    plan = run(obs, want, rec)
    assert pod_lines(plan)["web"] == [["neigh", "del", "10.244.0.3", "dev", "eth0"]]
    assert "remove pod db" in plan.actions
    assert not any(a.startswith("web:") for a in plan.actions)  # said by "remove pod db"
    plan = run(obs, want, rec, prune=False)
    assert "web" not in pod_lines(plan) and plan.actions == []


def test_pod_entries_stay_within_a_family():
    obs = {"netns": {}, "links": {"cni0": BRIDGE}, "pods": {}, "workloads": {}}
    plan = m.plan({"v4": {"ips": ["10.244.0.2/24"], "argv": None},
                   "v6": {"ips": ["fd00:10::3/64"], "argv": None},
                   "ds": {"ips": ["10.244.0.4/24", "fd00:10::4/64"], "argv": None}}, obs,
                  {"pods": {}}, "cni0", 1450, {4: "10.244.0.1", 6: "fd00:10::1"})
    dsts = {name: {line[2] for line in lines if line[:2] == ["neigh", "replace"]}
            for name, lines in pod_lines(plan).items()}
    assert dsts == {"v4": {"10.244.0.1", "10.244.0.4"}, "v6": {"fd00:10::1", "fd00:10::4"},
                    "ds": {"10.244.0.1", "fd00:10::1", "10.244.0.2", "fd00:10::3"}}
