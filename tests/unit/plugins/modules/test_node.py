# SPDX-License-Identifier: GPL-3.0-or-later
"""The node module's reconcile logic on recorded ``ip -json -details`` outputs."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils import kernel
from ansible_collections.flatnet.cluster.plugins.module_utils.names import bridge_mac
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


def parts(plan):
    """A node plan as the tuple it used to be: (batch lines, sysctl writes, actions, warnings).
    The plan is one host ``ip`` batch; its writes name each sysctl once (a dict keeps order)."""
    assert [(b.tool, b.netns, b.force, b.net) for b in plan.batches] == [("ip", None, False, None)]
    writes = dict(plan.sysctl)
    assert len(writes) == len(plan.sysctl)
    assert plan.changed == bool(plan.actions)
    return plan.batches[0].lines, writes, plan.actions, plan.warnings


def plan_present(*args, **kwargs):
    """``m.plan_present`` as (lines, writes, actions); a bridge plan has no warnings."""
    lines, writes, actions, warnings = parts(m.plan_present(*args, **kwargs))
    assert warnings == []
    return lines, writes, actions


def plan_retire(*args):
    return parts(m.plan_retire(*args))


def present(link=_RECORDED, addrs=None, want=None, now=None, accept_ra=None):
    link = copy.deepcopy(BR) if link is _RECORDED else link
    addrs = copy.deepcopy(ADDRS) if addrs is None else addrs
    want = copy.deepcopy(ADDRS) if want is None else want
    now = copy.deepcopy(FWD) if now is None else now
    return plan_present("cni0", want, 1450, link, addrs, accept_ra, now,
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
    _l, writes, _a = plan_present("cni0", want, 1450, None, [], None, FWD, m.wanted_sysctls(True, FWD))
    assert writes["net.ipv6.conf.cni0.accept_ra"] == "0"
    assert writes["net.ipv6.conf.all.forwarding"] == "1"
    _l, writes, _a = plan_present("cni0", want, 1450, BR, want, "1", dict(
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


def own(link, addrs=(), record=None, adopt=False, accept_ra=None):
    return m.ownership("cni0", link, list(addrs), ADDRS, record or {}, adopt, "/x/node.json", accept_ra)


def test_foreign_bridge_refused_without_adopt():
    # Not recorded, no marker: refused, whether it has addresses or not.
    for addrs in ([], ["10.88.0.1/16"]):
        with pytest.raises(m.NodeError, match="was not made by flatnet.cluster") as exc:
            own(dict(BR, ifalias=None), addrs)
        assert "flatnet_bridge_adopt: true" in str(exc.value) and "/x/node.json" in str(exc.value)
        assert "nothing was changed" in str(exc.value)
    with pytest.raises(m.NodeError, match=r"IP address different from .*10\.88\.0\.1/16"):
        own(dict(BR, ifalias=None), ["10.88.0.1/16"])


def test_ours_by_marker_or_record_and_adopt_records_originals():
    assert own(None) == (True, None)
    assert own(BR) == (True, None)  # marked
    assert own(dict(BR, ifalias=None), record={"bridge": "cni0"}) == (True, None)  # recorded
    link = dict(BR, ifalias=None, mtu=9000, address="ce:11:22:33:44:55", flags=["BROADCAST"])
    mark, adopted = own(link, ["10.244.0.1/24"], adopt=True, accept_ra="1")
    assert mark is False
    assert adopted == {"mac": "ce:11:22:33:44:55", "mtu": 9000, "addresses": ["10.244.0.1/24"],
                       "up": False, "accept_ra": "1"}
    # Once recorded as adopted it stays adopted (and unmarked), even without the option.
    assert own(link, record={"bridge": "cni0", "adopted": adopted}) == (False, adopted)
    # Adopting never takes addresses from whatever uses them.
    with pytest.raises(m.NodeError, match="cannot be adopted.*10.88.0.1/16"):
        own(link, ["10.88.0.1/16"], adopt=True)


def test_adopted_bridge_is_not_marked():
    lines, _w, actions = plan_present("cni0", ADDRS, 1450, dict(BR, ifalias=None), ADDRS, None,
                                      FWD, m.wanted_sysctls(False, FWD), mark=False)
    assert lines == [] and actions == []
    lines, _w, _a = plan_present("cni0", ADDRS, 1450, dict(BR, ifalias=None), ADDRS, None,
                                 FWD, m.wanted_sysctls(False, FWD), mark=True)
    assert lines == [["link", "set", "cni0", "alias", "flatnet"]]


def test_retire_deletes_ours_restores_adopted_and_leaves_unmarked():
    old = dict(BR, ifname="br-old")
    assert plan_retire({"bridge": "br-old"}, old, ADDRS, "0") == (
        [["link", "del", "br-old"]], {}, ["delete bridge br-old"], [])
    lines, writes, actions, warns = plan_retire({"bridge": "br-old"}, dict(old, ifalias=None), ADDRS, "0")
    assert lines == [] and writes == {} and actions == [] and "left in place" in warns[0]
    assert plan_retire({"bridge": "br-old"}, None, [], None) == ([], {}, [], [])
    adopted = {"mac": "ce:11:22:33:44:55", "mtu": 9000, "addresses": ["192.0.2.1/24"], "up": False,
               "accept_ra": "1"}
    lines, writes, actions, _w = plan_retire({"bridge": "br-old", "adopted": adopted},
                                             dict(old, ifalias=None), ADDRS + ["192.0.2.1/24"], "0")
    assert lines == [["addr", "del", "10.244.0.1/24", "dev", "br-old"],
                     ["link", "set", "br-old", "address", "ce:11:22:33:44:55"],
                     ["link", "set", "br-old", "mtu", 9000],
                     ["link", "set", "br-old", "down"]]
    assert writes == {"net.ipv6.conf.br-old.accept_ra": "1"}
    assert ["link", "del", "br-old"] not in lines


def test_old_bridges_from_record_and_retired():
    retired = [{"bridge": "a", "adopted": None}, {"bridge": "b", "adopted": None}]
    rec = {"bridge": "b", "adopted": None, "retired": retired}
    assert [o["bridge"] for o in m.old_bridges(rec)] == ["a", "b"]
    assert [o["bridge"] for o in m.old_bridges(rec, keep="b")] == ["a"]
    assert m.old_bridges({}) == []


def test_underlay_accept_ra_kept_only_where_it_used_ras():
    name = "net.ipv6.conf.eth0.accept_ra"
    now = {name: "1", "net.ipv6.conf.all.forwarding": "0"}
    assert m.underlay_ra_sysctls(True, "eth0", now, {}) == {name: "2"}
    assert m.underlay_ra_sysctls(False, "eth0", now, {}) == {}  # no IPv6 in the cluster
    assert m.underlay_ra_sysctls(True, None, now, {}) == {}
    assert m.underlay_ra_sysctls(True, "eth0", dict(now, **{name: "0"}), {}) == {}
    assert m.underlay_ra_sysctls(True, "eth0", dict(now, **{name: "2"}), {}) == {}
    # Forwarding was already on before us: the host was not using RAs; leave it.
    assert m.underlay_ra_sysctls(True, "eth0", dict(now, **{"net.ipv6.conf.all.forwarding": "1"}), {}) == {}
    # Forwarding is on because of us: the original counts, and a recorded 2 stays wanted.
    fwd = {"net.ipv6.conf.all.forwarding": {"original": "0", "value": "1"}}
    assert m.underlay_ra_sysctls(True, "eth0", dict(now, **{"net.ipv6.conf.all.forwarding": "1"}), fwd) \
        == {name: "2"}
    assert m.underlay_ra_sysctls(True, "eth0", dict(now, **{name: "2"}), {name: {"original": "1"}}) \
        == {name: "2"}
    # Written before forwarding: the writes keep the wanted order.
    want = m.underlay_ra_sysctls(True, "eth0", now, {})
    want.update(m.wanted_sysctls(True, now))
    _l, writes, _a = plan_present("cni0", ADDRS, 1450, BR, ADDRS, None, now, want)
    assert list(writes)[:2] == [name, "net.ipv4.ip_forward"]
    assert writes[name] == "2" and writes["net.ipv6.conf.all.forwarding"] == "1"


def test_restore_puts_forwarding_back_before_accept_ra():
    rec = {"sysctls": {"net.ipv6.conf.eth0.accept_ra": {"original": "1", "value": "2"},
                       "net.ipv6.conf.all.forwarding": {"original": "0", "value": "1"}}}
    now = {"net.ipv6.conf.eth0.accept_ra": "2", "net.ipv6.conf.all.forwarding": "1"}
    assert list(m.plan_restore(rec, now).items()) == [
        ("net.ipv6.conf.all.forwarding", "0"), ("net.ipv6.conf.eth0.accept_ra", "1")]


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
    # The intent record is written before the sysctl: an interrupted run left "0" recorded and
    # the sysctl at "1" (or still "0"); a rerun never records "1" as the original.
    assert m.record_sysctls({"sysctls": rec}, writes, {"net.ipv4.ip_forward": "0"},
                            {"net.ipv4.ip_forward": "1"}) == rec
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


def test_old_bridges_go_first_in_the_same_batch_and_sysctls_keep_their_order():
    adopted = {"mac": MAC, "mtu": 1450, "addresses": ["192.0.2.1/24"], "up": True, "accept_ra": "1"}
    olds = [({"bridge": "br-a", "adopted": adopted}, dict(BR, ifname="br-a", ifalias=None),
             ADDRS, "0"),
            ({"bridge": "br-old"}, dict(BR, ifname="br-old"), [], None),
            ({"bridge": "br-gone"}, None, [], None)]
    want = {"net.ipv4.ip_forward": "1"}
    plan = m.plan_present("cni0", ADDRS, 1450, None, [], None, {"net.ipv4.ip_forward": "0"}, want,
                          adopting=None, retire=olds)
    lines, writes, actions, warnings = parts(plan)
    assert lines[:3] == [["addr", "del", "10.244.0.1/24", "dev", "br-a"],
                         ["addr", "add", "192.0.2.1/24", "dev", "br-a"],
                         ["link", "del", "br-old"]]
    assert lines[3][:3] == ["link", "add", "cni0"]
    assert plan.sysctl == [("net.ipv6.conf.br-a.accept_ra", "1"), ("net.ipv4.ip_forward", "1")]
    assert actions[:4] == ["br-a: remove address 10.244.0.1/24", "br-a: restore address 192.0.2.1/24",
                           "restore net.ipv6.conf.br-a.accept_ra=1", "delete bridge br-old"]
    assert actions[4] == "add bridge cni0 mtu 1450" and warnings == []
    # An adopted bridge is said first, after the old bridges.
    plan = m.plan_present("cni0", ADDRS, 1450, dict(BR, ifalias=None), ADDRS, None, FWD, {},
                          mark=False, adopting={"mac": "m", "mtu": 9000, "addresses": []},
                          retire=olds[1:2])
    assert plan.actions == ["delete bridge br-old", "adopt bridge cni0 (record its MAC m, mtu 9000, "
                                                    "addresses -)"]


def test_absent_plan_restores_sysctls_then_the_bridges_accept_ra():
    adopted = {"mac": MAC, "mtu": 1450, "addresses": ADDRS, "up": True, "accept_ra": "1"}
    rec = {"bridge": "cni0", "sysctls": {"net.ipv4.ip_forward": {"original": "0", "value": "1"}}}
    olds = [({"bridge": "cni0", "adopted": adopted}, BR, ADDRS, "0")]
    plan = m.plan_absent("cni0", BR, rec, olds, {"net.ipv4.ip_forward": "1"}, "/x/node.json", True)
    assert parts(plan) == ([], {"net.ipv4.ip_forward": "0", "net.ipv6.conf.cni0.accept_ra": "1"},
                           ["restore net.ipv6.conf.cni0.accept_ra=1", "restore net.ipv4.ip_forward=0",
                            "remove /x/node.json"], [])
    assert plan.sysctl[0] == ("net.ipv4.ip_forward", "0")
    # A marked bridge without a record is left (a warning); no record file, nothing to remove.
    plan = m.plan_absent("cni0", BR, {}, [], {}, "/x/node.json", False)
    assert parts(plan)[:3] == ([], {}, []) and "not recorded in /x/node.json" in plan.warnings[0]


def test_report_shows_a_deleted_old_bridge_absent_and_the_new_one():
    olds = [({"bridge": "br-old"}, dict(BR, ifname="br-old"), ADDRS, None)]
    plan = m.plan_present("cni0", ADDRS, 1450, None, [], None, FWD, {}, retire=olds)
    new_link = {"address": MAC, "mtu": 1450, "flags": ["UP"]}
    result = m.report(plan, {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": None},
                      olds, ("cni0", None, [], new_link, ADDRS), diff=True)
    assert result["changed"] and result["sysctls"] == {"net.ipv4.ip_forward": "0"}
    assert result["diff"] == {
        "before": f"bridge br-old: addresses 10.244.0.1/24; mac {MAC}; mtu 1450; up\n"
                  "bridge cni0: absent\nnet.ipv4.ip_forward = 0\n",
        "after": f"bridge br-old: absent\nbridge cni0: addresses 10.244.0.1/24; mac {MAC}; "
                 "mtu 1450; up\nnet.ipv4.ip_forward = 0\n"}
    assert "diff" not in m.report(plan, {}, olds)


def test_plan_applies_batch_first_then_sysctls_in_order_to_proc_sys(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(kernel, "PROC_SYS", str(tmp_path))
    for name in ("net/ipv4/ip_forward", "net/ipv6/conf/cni0/accept_ra"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("9\n")

    class Runner(kernel.Runner):
        def batch(self, tool, lines, opts=(), force=False, net=None):
            calls.append(("batch", tool, list(opts), lines))

        def run(self, *args, **kwargs):
            raise AssertionError("the node writes /proc/sys itself: no sysctl process")

        def sysctl(self, key, value=None, net=None):
            super().sysctl(key, value, net=net)
            calls.append(("sysctl", key, (tmp_path / "/".join(kernel.sysctl_parts(key))).read_text()))

    plan = m.reconcile.Plan()
    plan.batch("ip").append(["link", "set", "cni0", "up"])
    plan.sysctl += [("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.cni0.accept_ra", "0")]
    m.reconcile.apply(Runner(None), plan)
    assert calls == [("batch", "ip", [], [["link", "set", "cni0", "up"]]),
                     ("sysctl", "net.ipv4.ip_forward", "1"),
                     ("sysctl", "net.ipv6.conf.cni0.accept_ra", "0")]
