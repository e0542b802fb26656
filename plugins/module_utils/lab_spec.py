# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's parameters as a pure spec: names, subnets, nodes and the outside network.

``lab_spec(params)`` checks the module parameters of ``flatnet.cluster.lab`` and returns
what the lab is to be, or raises LabError with a message a user can act on. Nothing here
touches the machine, so it is tested without root.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re

LAB_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?\Z")
NODE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
SUBNET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z")


class LabError(Exception):
    pass


def _short(prefix, name):
    """Link name ``prefix + name`` when it fits in 15 characters, else prefix + digest."""
    if len(prefix + name) <= 15:
        return prefix + name
    return prefix + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]


def bridge_name(subnet):
    return _short("br-", subnet)


def node_link_name(node):
    return _short("v-", node)


def lab_spec(params):
    """The spec of a lab from the module params: a dict with ``name``, ``state_dir``
    (absolute), ``mtu``, ``subnets`` and ``nodes`` (dicts by name) and ``outside`` (None or a
    dict). With state=absent only the name and state_dir are checked (subnets, nodes and
    outside are then empty)."""
    name = params["name"]
    state_dir = os.path.abspath(params["state_dir"])
    spec = {"name": name, "state_dir": state_dir, "mtu": params["mtu"],
            "subnets": {}, "nodes": {}, "outside": None}
    if not LAB_NAME_RE.match(name):
        raise LabError(f"lab name {name!r} must be lower-case letters, digits and '-', at most 16 characters")
    for bad in ("/etc", "/var/lib", "/proc", "/sys"):
        if state_dir == bad or state_dir.startswith(bad + "/"):
            raise LabError(f"state_dir {state_dir} must not be under {bad}: the nodes overlay or replace it")
    if params["state"] == "absent":
        return spec
    if not params["subnets"]:
        raise LabError("subnets is required with state=present")
    if not 576 <= spec["mtu"] <= 65535:
        raise LabError(f"mtu {spec['mtu']} is out of range (576-65535)")
    spec["subnets"] = subnets = _subnets(params["subnets"])
    spec["nodes"] = nodes = _nodes(params["nodes"], subnets)
    for r in params["restart"]:
        if r not in nodes:
            raise LabError(f"restart: node {r} is not in nodes")
    if params["outside"]:
        spec["outside"] = _outside(params["outside"], subnets)
    return spec


def _subnets(wanted):
    subnets = {}
    for s in wanted:
        if not SUBNET_NAME_RE.match(s["name"]):
            raise LabError(f"subnet name {s['name']!r} may hold only letters, digits, '-' and '_'")
        if s["name"] in subnets:
            raise LabError(f"subnet {s['name']} is listed twice")
        net = _net(s["cidr"], f"subnet {s['name']}")
        gw = _gateway(net, s.get("gateway"), f"subnet {s['name']}")
        for other in subnets.values():
            if net.overlaps(other["net"]):
                raise LabError(f"subnet {s['name']} ({net}) overlaps subnet {other['name']} ({other['net']})")
        subnets[s["name"]] = {"name": s["name"], "net": net, "gateway": gw, "bridge": bridge_name(s["name"])}
    bridges = [s["bridge"] for s in subnets.values()]
    if len(set(bridges)) != len(bridges):
        raise LabError(f"subnet names give clashing bridge names: {bridges}")
    return subnets


def _nodes(wanted, subnets):
    nodes = {}
    used_ips = {str(s["gateway"]): f"the gateway of subnet {s['name']}" for s in subnets.values()}
    for n in wanted:
        name = n["name"]
        if not NODE_NAME_RE.match(name):
            raise LabError(f"node name {name!r} must be a DNS label (lower-case letters, digits, '-')")
        if name in nodes:
            raise LabError(f"node {name} is listed twice")
        try:
            ip = ipaddress.IPv4Address(n["ip"])
        except ValueError:
            raise LabError(f"node {name}: ip {n['ip']!r} is not an IPv4 address (give it without prefix)")
        if n.get("subnet"):
            if n["subnet"] not in subnets:
                raise LabError(f"node {name}: subnet {n['subnet']} is not in subnets ({', '.join(subnets)})")
            subnet = subnets[n["subnet"]]
        else:
            match = [s for s in subnets.values() if ip in s["net"]]
            if not match:
                raise LabError(f"node {name}: ip {ip} is in none of the subnets; set its subnet")
            subnet = match[0]
        if ip not in subnet["net"] or ip in (subnet["net"].network_address, subnet["net"].broadcast_address):
            raise LabError(f"node {name}: ip {ip} is not a host address of subnet {subnet['name']} ({subnet['net']})")
        if str(ip) in used_ips:
            raise LabError(f"node {name}: ip {ip} is already {used_ips[str(ip)]}")
        used_ips[str(ip)] = f"the address of node {name}"
        nodes[name] = {
            "name": name, "ip": ip, "subnet": subnet, "state": n.get("state") or "running",
            "link": node_link_name(name),
        }
    links = [n["link"] for n in nodes.values()]
    if len(set(links)) != len(links):
        raise LabError(f"node names give clashing link names: {links}")
    return nodes


def _outside(o, subnets):
    net = _net(o["cidr"], "outside")
    gw = _gateway(net, o.get("gateway"), "outside")
    try:
        ip = ipaddress.IPv4Address(o["ip"])
    except ValueError:
        raise LabError(f"outside: ip {o['ip']!r} is not an IPv4 address")
    if ip not in net or ip == gw or ip in (net.network_address, net.broadcast_address):
        raise LabError(f"outside: ip {ip} must be a host address of {net} other than the gateway {gw}")
    for s in subnets.values():
        if net.overlaps(s["net"]):
            raise LabError(f"outside {net} overlaps subnet {s['name']} ({s['net']})")
    return {"net": net, "gateway": gw, "ip": ip}


def _net(cidr, what):
    try:
        net = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError as e:
        raise LabError(f"{what}: {cidr!r} is not an IPv4 network ({e})")
    if net.prefixlen > 30:
        raise LabError(f"{what}: {net} is too small (at most /30)")
    return net


def _gateway(net, gateway, what):
    if not gateway:
        return net.network_address + 1
    try:
        gw = ipaddress.IPv4Address(gateway)
    except ValueError:
        raise LabError(f"{what}: gateway {gateway!r} is not an IPv4 address")
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise LabError(f"{what}: gateway {gw} is not a host address of {net}")
    return gw


# The module's argument_spec (deep-copied by the module before use).
ARGUMENT_SPEC = dict(
    name=dict(type="str", default="lab"),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    subnets=dict(type="list", elements="dict", options=dict(
        name=dict(type="str", required=True),
        cidr=dict(type="str", required=True),
        gateway=dict(type="str"),
    )),
    nodes=dict(type="list", elements="dict", default=[], options=dict(
        name=dict(type="str", required=True),
        ip=dict(type="str", required=True),
        subnet=dict(type="str"),
        state=dict(type="str", default="running", choices=["running", "stopped", "absent"]),
    )),
    restart=dict(type="list", elements="str", default=[]),
    outside=dict(type="dict", options=dict(
        cidr=dict(type="str", required=True),
        ip=dict(type="str", required=True),
        gateway=dict(type="str"),
    )),
    mtu=dict(type="int", default=1500),
    state_dir=dict(type="path", default="/run/flatnet/lab"),
)
