# SPDX-License-Identifier: GPL-3.0-or-later
"""Underlay choice from recorded ``ip -json addr show`` / ``route show default`` outputs."""

from __future__ import annotations

import json

import pytest

from ansible_collections.flatnet.cluster.plugins.modules import node_facts as m

ADDR = json.loads("""[
 {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"mtu":65536,
  "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
 {"ifindex":2,"ifname":"eth0","flags":["UP"],"mtu":1500,
  "addr_info":[{"family":"inet","local":"10.0.2.15","prefixlen":24,"scope":"global"},
               {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]},
 {"ifindex":3,"ifname":"eth1","flags":["UP"],"mtu":9000,
  "addr_info":[{"family":"inet6","local":"2001:db8::11","prefixlen":64,"scope":"global"},
               {"family":"inet","local":"192.168.50.99","prefixlen":24,"scope":"global","secondary":true},
               {"family":"inet","local":"192.168.50.11","prefixlen":24,"scope":"global"}]},
 {"ifindex":4,"ifname":"eth2","flags":["UP"],"mtu":1500,"addr_info":[]}
]""")
DEFAULT4 = [{"dst": "default", "gateway": "10.0.2.2", "dev": "eth0", "flags": []}]


def test_default_route():
    u = m.find_underlay(ADDR, {4: DEFAULT4, 6: []})
    assert u == {"interface": "eth0", "ip": "10.0.2.15", "prefix": 24, "network": "10.0.2.0/24",
                 "mtu": 1500, "family": 4, "chosen_by": "default-route"}


def test_interface_prefers_primary_v4():
    u = m.find_underlay(ADDR, {4: DEFAULT4}, interface="eth1")
    assert (u["ip"], u["mtu"], u["chosen_by"]) == ("192.168.50.11", 9000, "interface")


def test_ip():
    u = m.find_underlay(ADDR, {}, ip="2001:db8::11")
    assert (u["interface"], u["family"], u["network"], u["chosen_by"]) == ("eth1", 6, "2001:db8::/64", "ip")


def test_v6_default_route_only():
    u = m.find_underlay(ADDR, {4: [], 6: [{"dst": "default", "gateway": "fe80::1", "dev": "eth1"}]})
    assert u["ip"] == "2001:db8::11"


@pytest.mark.parametrize("kw, msg", [
    ({}, "flatnet_underlay_interface"),
    ({"interface": "eth9"}, "does not exist"),
    ({"interface": "eth2"}, "no global address"),
    ({"ip": "10.9.9.9"}, "flatnet_underlay_ip"),
])
def test_errors_name_the_fix(kw, msg):
    with pytest.raises(m.UnderlayError, match=msg):
        m.find_underlay(ADDR, {4: [], 6: []}, **kw)


def test_recorded(tmp_path):
    (tmp_path / "node.json").write_text(json.dumps({"pod_cidrs": ["10.244.3.0/24"]}))
    (tmp_path / "pods.json").write_text(json.dumps({"pods": {"a": {"ips": ["10.244.3.2/24"]}}}))
    assert m.read_recorded(str(tmp_path)) == {"pod_cidrs": ["10.244.3.0/24"], "pods": {"a": ["10.244.3.2"]}}
    assert m.read_recorded(str(tmp_path / "none")) == {}


def test_recorded_reads_records_and_refuses_a_corrupt_one(tmp_path):
    from ansible_collections.flatnet.cluster.plugins.module_utils import state

    assert m.read_recorded(str(tmp_path)) == {}
    (tmp_path / "node.json").write_text('{"pod_cidrs": ["10.244.0.0/24"]}')
    assert m.read_recorded(str(tmp_path)) == {"pod_cidrs": ["10.244.0.0/24"]}
    (tmp_path / "pods.json").write_text("[]")
    with pytest.raises(state.StateError, match="pods.json is corrupt"):
        m.read_recorded(str(tmp_path))


def test_programs_are_paths_or_none(tmp_path, monkeypatch):
    tool = tmp_path / "dnsmasq"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    plain = tmp_path / "bird"
    plain.write_text("not executable\n")
    monkeypatch.setattr(m, "PROGRAMS", {"dnsmasq": str(tool), "bird": str(plain),
                                        "birdc": str(tmp_path / "absent")})
    assert m.programs() == {"dnsmasq": str(tool), "bird": None, "birdc": None}


def test_bridge_nf_call_iptables_is_the_value_or_none(monkeypatch):
    import builtins
    real_open = builtins.open

    def fake(value):
        def opener(path, *a, **kw):
            if path == "/proc/sys/net/bridge/bridge-nf-call-iptables":
                if value is None:
                    raise FileNotFoundError(path)
                import io
                return io.StringIO(value + "\n")
            return real_open(path, *a, **kw)
        return opener

    monkeypatch.setattr(builtins, "open", fake("1"))
    assert m.bridge_nf_call_iptables() == "1"
    monkeypatch.setattr(builtins, "open", fake("0"))
    assert m.bridge_nf_call_iptables() == "0"
    monkeypatch.setattr(builtins, "open", fake(None))
    assert m.bridge_nf_call_iptables() is None


def test_bgp_files_are_the_bgp_modules_record_and_log():
    from ansible_collections.flatnet.cluster.plugins.modules import bgp
    assert set(m.BGP_FILES) == {bgp.RECORD, bgp.LOG}
