# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's parameters as a pure spec: no root, no kernel."""
from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils.lab_spec import (
    LabError,
    bridge_name,
    lab_spec,
    node_link_name,
)


def params(**over):
    p = {"name": "lab", "state": "present", "state_dir": "/run/flatnet/lab", "mtu": 1500,
         "subnets": [{"name": "lan", "cidr": "192.168.50.0/24", "gateway": None}],
         "nodes": [{"name": "node1", "ip": "192.168.50.11", "subnet": None, "state": "running"}],
         "restart": [], "outside": None}
    p.update(over)
    return p


def test_spec_of_one_subnet_and_one_node():
    spec = lab_spec(params())
    lan = spec["subnets"]["lan"]
    assert lan == {"name": "lan", "net": ipaddress.IPv4Network("192.168.50.0/24"),
                   "gateway": ipaddress.IPv4Address("192.168.50.1"), "bridge": "br-lan"}
    assert spec["nodes"]["node1"] == {"name": "node1", "ip": ipaddress.IPv4Address("192.168.50.11"),
                                      "subnet": lan, "state": "running", "link": "v-node1"}
    assert spec["outside"] is None
    assert (spec["name"], spec["state_dir"], spec["mtu"]) == ("lab", "/run/flatnet/lab", 1500)


def test_spec_with_outside_and_explicit_gateways():
    spec = lab_spec(params(
        subnets=[{"name": "a", "cidr": "192.168.50.0/24", "gateway": "192.168.50.254"},
                 {"name": "b", "cidr": "192.168.60.0/24"}],
        nodes=[{"name": "n1", "ip": "192.168.60.5", "subnet": "b"}],
        outside={"cidr": "203.0.113.0/24", "ip": "203.0.113.10", "gateway": None},
    ))
    assert str(spec["subnets"]["a"]["gateway"]) == "192.168.50.254"
    assert spec["nodes"]["n1"]["subnet"]["name"] == "b"
    assert spec["nodes"]["n1"]["state"] == "running"  # the default when not given
    assert spec["outside"] == {"net": ipaddress.IPv4Network("203.0.113.0/24"),
                               "gateway": ipaddress.IPv4Address("203.0.113.1"),
                               "ip": ipaddress.IPv4Address("203.0.113.10")}


def test_absent_checks_only_name_and_state_dir():
    spec = lab_spec(params(state="absent", subnets=None, nodes=[], mtu=1))
    assert spec["subnets"] == {} and spec["nodes"] == {} and spec["outside"] is None
    with pytest.raises(LabError, match="must not be under /etc"):
        lab_spec(params(state="absent", state_dir="/etc/lab"))


# Moved here from tests/unit/plugins/modules/test_lab.py with the names it tests.
def test_link_names_fit():
    assert node_link_name("node1") == "v-node1"
    long = node_link_name("a-very-long-node-name")
    assert len(long) <= 15 and long.startswith("v-")
    assert bridge_name("lan") == "br-lan"


def test_long_names_get_a_digest():
    assert bridge_name("a" * 20).startswith("br-") and len(bridge_name("a" * 20)) == 11
    assert node_link_name("node-with-a-long-name") != node_link_name("node-with-a-long-nam")
    assert node_link_name("n1") == "v-n1"


LAN = [{"name": "lan", "cidr": "192.168.50.0/24"}]


@pytest.mark.parametrize("over, message", [
    ({"name": "Lab"}, "lab name 'Lab' must be lower-case letters, digits and '-', at most 16 characters"),
    ({"name": "a" * 17}, "at most 16 characters"),
    ({"state_dir": "/var/lib/x"}, "state_dir /var/lib/x must not be under /var/lib: the nodes overlay or replace it"),
    ({"state_dir": "/proc"}, "must not be under /proc"),
    ({"subnets": []}, "subnets is required with state=present"),
    ({"mtu": 575}, "mtu 575 is out of range (576-65535)"),
    ({"subnets": [{"name": "a b", "cidr": "10.0.0.0/24"}]}, "subnet name 'a b' may hold only"),
    ({"subnets": LAN + LAN}, "subnet lan is listed twice"),
    ({"subnets": [{"name": "lan", "cidr": "10.0.0.1/24"}]}, "subnet lan: '10.0.0.1/24' is not an IPv4 network"),
    ({"subnets": [{"name": "lan", "cidr": "10.0.0.0/31"}]}, "subnet lan: 10.0.0.0/31 is too small (at most /30)"),
    ({"subnets": [{"name": "lan", "cidr": "10.0.0.0/24", "gateway": "x"}]},
     "subnet lan: gateway 'x' is not an IPv4 address"),
    ({"subnets": [{"name": "lan", "cidr": "10.0.0.0/24", "gateway": "10.0.0.255"}]},
     "subnet lan: gateway 10.0.0.255 is not a host address of 10.0.0.0/24"),
    ({"subnets": LAN + [{"name": "b", "cidr": "192.168.50.128/25"}]},
     "subnet b (192.168.50.128/25) overlaps subnet lan (192.168.50.0/24)"),
    ({"subnets": [{"name": "x" * 13 + "1", "cidr": "10.0.1.0/24"}, {"name": "x" * 13 + "2", "cidr": "10.0.2.0/24"}],
      "nodes": []}, None),  # long names are digested, so they do not clash
    ({"nodes": [{"name": "Node1", "ip": "192.168.50.11"}]}, "node name 'Node1' must be a DNS label"),
    ({"nodes": [{"name": "n", "ip": "192.168.50.11"}, {"name": "n", "ip": "192.168.50.12"}]}, "node n is listed twice"),
    ({"nodes": [{"name": "n", "ip": "192.168.50.11/24"}]},
     "node n: ip '192.168.50.11/24' is not an IPv4 address (give it without prefix)"),
    ({"nodes": [{"name": "n", "ip": "192.168.50.11", "subnet": "wan"}]}, "node n: subnet wan is not in subnets (lan)"),
    ({"nodes": [{"name": "n", "ip": "10.9.9.9"}]}, "node n: ip 10.9.9.9 is in none of the subnets; set its subnet"),
    ({"nodes": [{"name": "n", "ip": "192.168.50.255"}]},
     "node n: ip 192.168.50.255 is not a host address of subnet lan (192.168.50.0/24)"),
    ({"nodes": [{"name": "n", "ip": "192.168.50.1"}]}, "node n: ip 192.168.50.1 is already the gateway of subnet lan"),
    ({"nodes": [{"name": "m", "ip": "192.168.50.9"}, {"name": "n", "ip": "192.168.50.9"}]},
     "node n: ip 192.168.50.9 is already the address of node m"),
    ({"restart": ["ghost"]}, "restart: node ghost is not in nodes"),
    ({"outside": {"cidr": "203.0.113.0/24", "ip": "x"}}, "outside: ip 'x' is not an IPv4 address"),
    ({"outside": {"cidr": "203.0.113.0/24", "ip": "203.0.113.1"}},
     "outside: ip 203.0.113.1 must be a host address of 203.0.113.0/24 other than the gateway 203.0.113.1"),
    ({"outside": {"cidr": "192.168.50.0/25", "ip": "192.168.50.10"}},
     "outside 192.168.50.0/25 overlaps subnet lan (192.168.50.0/24)"),
    ({"outside": {"cidr": "203.0.113.0/24", "ip": "203.0.113.10", "gateway": "198.51.100.1"}},
     "outside: gateway 198.51.100.1 is not a host address of 203.0.113.0/24"),
])
def test_bad_params_are_refused_with_the_module_messages(over, message):
    if message is None:
        lab_spec(params(**over))
        return
    with pytest.raises(LabError) as e:
        lab_spec(params(**over))
    assert message in str(e.value)
