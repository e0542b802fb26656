# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planner's inputs and their checks (controller side, pure functions).

One rule per kind of input: CIDRs, addresses, integers, booleans, link names, commands, pod
entries, the backend and a node's underlay. Every check raises ``PlanError`` with one message
that names the variable as the user wrote it, the bad value and the fix; the plan action runs
them all before it plans anything, so a bad value never reaches a node. The defaults of the
inputs live here too.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from ansible_collections.flatnet.cluster.plugins.module_utils.names import (
    is_pod_name,
    link_name_problem,
)

try:
    from netaddr import AddrFormatError, IPAddress, IPNetwork
except ImportError as _exc:  # netaddr is a controller requirement; say so when it is missing
    NETADDR_IMPORT_ERROR: ImportError | None = _exc
    AddrFormatError = ValueError
    IPAddress = IPNetwork = None
else:
    NETADDR_IMPORT_ERROR = None

DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_NODE_PREFIX = 24
DEFAULT_NODE_PREFIX_V6 = 64
DEFAULT_VXLAN = {"vni": 1, "port": 8472, "device": "flatnet.1"}
BACKENDS = ("host-gw", "vxlan", "auto", "bgp")
DEFAULT_BRIDGE = "cni0"
# The keys a pod entry may have; anything else is a typo and is refused by name.
POD_KEYS = ("name", "ip", "command", "labels")
# The cluster name ends up in the plan file's name; the group is used as a host pattern.
CLUSTER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
GROUP_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}\Z")
# The spellings Ansible's ``bool`` type accepts (-e gives strings such as "false").
_BOOL_TRUE = frozenset({"yes", "on", "1", "true", "y", "t"})
_BOOL_FALSE = frozenset({"no", "off", "0", "false", "n", "f"})

# How messages name each input. build_plan() names the role variables a user writes in the
# inventory; the filters (node_cidrs, pod_ips) name their own arguments.
_ROLE_VARS = {
    "cluster_cidr": "flatnet_cluster_cidr",
    "node_prefix": "flatnet_node_prefix",
    "node_prefix_v6": "flatnet_node_prefix_v6",
    "service_cidr": "flatnet_service_cidr",
    "reserved_cidrs": "flatnet_reserved_cidrs",
    "pod_cidr": "flatnet_pod_cidr",
    "pods": "flatnet_pods",
    "pods_per_node": "flatnet_pods_per_node",
    "backend": "flatnet_backend",
    "mtu": "flatnet_mtu",
    "masquerade": "flatnet_masquerade",
    "vni": "flatnet_vxlan_vni",
    "port": "flatnet_vxlan_port",
    "device": "flatnet_vxlan_device",
    "bridge": "flatnet_bridge",
    "prune": "flatnet_prune",
    "firewall": "flatnet_firewall",
    "vxlan_guard": "flatnet_vxlan_guard",
    "underlay_interface": "flatnet_underlay_interface",
    "cluster_name": "flatnet_cluster_name",
    "group": "flatnet_group",
}
ROLE_VARS = MappingProxyType(_ROLE_VARS)
PLAIN_NAMES = MappingProxyType(dict({k: k for k in _ROLE_VARS}, vni="vxlan vni", port="vxlan port",
                                    device="vxlan device"))

# Ranges that can never carry pods: a cluster, service, reserved or pinned CIDR overlapping
# one of them is refused (IPv4 first, then IPv6).
UNUSABLE_RANGES = (
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, with the broadcast address 255.255.255.255"),
    ("::/128", "the unspecified address"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)

_FAMILY_NAME = {4: "IPv4", 6: "IPv6"}


class PlanError(Exception):
    """A planning problem; ``str(err)`` is the one message for the user."""


def require_netaddr() -> None:
    """Raise PlanError when the netaddr package is not installed on the controller."""
    if NETADDR_IMPORT_ERROR is not None:
        raise PlanError(
            "flatnet.cluster plans addresses with the Python package netaddr, which is not installed "
            f"for the Python that runs Ansible on the controller ({NETADDR_IMPORT_ERROR}); "
            "install it with: pip install netaddr"
        )


# --------------------------------------------------------------------------- CIDRs and addresses


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return list(value)
    return [value]


def _overlaps(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.first <= b.last and b.first <= a.last


def unusable_range(net: IPNetwork) -> str | None:
    """Why ``net`` can never carry pods (it overlaps loopback, multicast, ...), or None."""
    require_netaddr()
    for cidr, label in UNUSABLE_RANGES:
        bad = IPNetwork(cidr)
        if _overlaps(net, bad):
            return f"overlaps {cidr} ({label})"
    return None


def parse_network(value, what: str, usable: bool = True) -> IPNetwork:
    """Parse a CIDR that must be a network (not a host address inside one).

    With ``usable`` (the default) a range that overlaps one that can never carry pods
    (loopback, multicast, link-local, unspecified, reserved, IPv4-mapped) is refused too.
    """
    require_netaddr()
    if not isinstance(value, str) or "/" not in value:
        raise PlanError(
            f"{what} {value!r} is not a CIDR; write a network with a prefix length, "
            "e.g. 10.244.0.0/16 or fd00:10:244::/56"
        )
    try:
        net = IPNetwork(value.strip())
    except (AddrFormatError, ValueError, TypeError) as exc:
        raise PlanError(f"{what} {value!r} is not a valid CIDR ({exc}); write e.g. 10.244.0.0/16") from None
    if net.ip != net.network:
        raise PlanError(
            f"{what} {value.strip()} is a host address, not a network; did you mean {net.cidr}?"
        )
    if usable:
        why = unusable_range(net)
        if why is not None:
            example = "10.244.0.0/16" if net.version == 4 else "fd00:10:244::/56"
            raise PlanError(
                f"{what} {net} {why}, which can never carry pods; use a private unicast range "
                f"such as {example}"
            )
    return net


def parse_address(value, what: str) -> IPAddress:
    """Parse a bare IP address (a trailing /prefix is refused here)."""
    require_netaddr()
    if not isinstance(value, str) or "/" in value:
        raise PlanError(f"{what} {value!r} is not an IP address; write e.g. 10.244.0.9")
    try:
        return IPAddress(value.strip())
    except (AddrFormatError, ValueError, TypeError) as exc:
        raise PlanError(f"{what} {value!r} is not a valid IP address ({exc})") from None


def _by_family(nets: list[IPNetwork], what: str) -> list[IPNetwork]:
    seen: dict[int, IPNetwork] = {}
    for net in nets:
        if net.version in seen:
            raise PlanError(
                f"{what} has two {_FAMILY_NAME[net.version]} entries ({seen[net.version]} and {net}); "
                "give at most one IPv4 and one IPv6 CIDR"
            )
        seen[net.version] = net
    return [seen[f] for f in (4, 6) if f in seen]


def parse_cluster_cidrs(value, what: str = "cluster_cidr") -> list[IPNetwork]:
    """Parse ``cluster_cidr``: a string or a list of one IPv4 and/or one IPv6 CIDR (v4 first)."""
    if isinstance(value, Mapping):
        raise PlanError(f"{what} {value!r} is not a CIDR or a list of CIDRs; write e.g. 10.244.0.0/16")
    items = _as_list(value)
    if not items:
        raise PlanError(f"{what} is empty; set it, e.g. 10.244.0.0/16 or [10.244.0.0/16, fd00:10:244::/56]")
    return _by_family([parse_network(v, what) for v in items], what)


# --------------------------------------------------------------------------- scalars and names


def _type_name(value) -> str:
    """A YAML-ish name of a value's type for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Mapping):
        return "mapping"
    return {"str": "string", "int": "integer"}.get(type(value).__name__, type(value).__name__)


def _integer(value, what: str, low: int | None = None, high: int | None = None, kind: str = "an integer",
             where: str = "", example=None) -> int:
    """An integer from an int or a string of digits (``-e var=5`` gives "5"); never a bool."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value):
        number = int(value)
    if number is None:
        rng = f" from {low} to {high}" if low is not None and high is not None else (
            f" of {low} or more" if low is not None else "")
        eg = f", e.g. {example}" if example is not None else ""
        raise PlanError(f"{what} {value!r}{where} is not an integer; give {kind}{rng}{eg}")
    if (low is not None and number < low) or (high is not None and number > high):
        if high is None:
            raise PlanError(f"{what} {value!r}{where} is out of range; use {kind} of {low} or more")
        raise PlanError(f"{what} {value!r}{where} is out of range; use {kind} from {low} to {high}")
    return number


def check_bool(value, what: str, where: str = "") -> bool:
    """A boolean, spelt as Ansible's ``bool`` type accepts it (true/false, yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        if value.lower() in _BOOL_TRUE:
            return True
        if value.lower() in _BOOL_FALSE:
            return False
    raise PlanError(f"{what} {value!r}{where} is not a boolean; set it to true or false")


def check_link_name(value, what: str, where: str = "") -> str:
    """A Linux interface name the collection may make or use in a batch line."""
    problem = link_name_problem(value)
    if problem is not None:
        raise PlanError(
            f"{what} {value!r}{where} {problem}; choose another name of at most 15 letters, digits, "
            "'_', '.' or '-', e.g. cni0 or flatnet.1"
        )
    return value


def _check_name(value, pattern, message: str) -> str:
    """``value`` when it is a string that ``pattern`` matches, else PlanError(message)."""
    if not isinstance(value, str) or not pattern.match(value):
        raise PlanError(message)
    return value


def check_cluster_name(value, what: str = ROLE_VARS["cluster_name"]) -> str:
    """The cluster name: part of the plan file's name, so no '/', spaces or dots first."""
    return _check_name(
        value, CLUSTER_NAME_RE,
        f"{what} {value!r} is not allowed: it becomes part of a file name, so use 1-63 letters, "
        "digits, '_', '.' or '-' starting with a letter or digit, e.g. flatnet or lab-1")


def check_group(value, what: str = ROLE_VARS["group"]) -> str:
    """The inventory group of the cluster: a plain group name, never a host pattern."""
    return _check_name(
        value, GROUP_NAME_RE,
        f"{what} {value!r} is not an inventory group name: it is used as a host pattern, so use "
        "letters, digits, '_', '.' and '-' only (no ':', ',', '!', '&', '*' or spaces), e.g. flatnet_nodes")


# --------------------------------------------------------------------------- pods


def check_command(node: str, pod: str, command, v: Mapping = ROLE_VARS):
    """A pod's ``command``: None, a non-empty list of strings (integers become strings; other
    types, floats included, are refused, since str() would not give back what was written), or
    a string that shlex splits into at least one word. Returns what the plan keeps."""
    where = f"command of pod {pod} on {node} ({v['pods']})"
    if command is None:
        return None
    if isinstance(command, str):
        if "\0" in command:
            raise PlanError(
                f"{where} {command!r} holds a NUL character, which no command line can carry; remove it"
            )
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise PlanError(
                f"{where} {command!r} does not split into arguments ({exc}): close the quote, or give "
                "the command as a list of strings"
            ) from None
        if not words:
            raise PlanError(f"{where} {command!r} is empty; give the program to run, or leave command out")
        return command
    if isinstance(command, (list, tuple)):
        if not command:
            raise PlanError(f"{where} [] is empty; give the program to run, or leave command out")
        argv = []
        for index, item in enumerate(command):
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise PlanError(
                    f"{where}: argument {index} {item!r} is a {_type_name(item)}, not a string; "
                    "write every argument as a string (quote it)"
                )
            text = str(item)
            if "\0" in text:
                raise PlanError(f"{where}: argument {index} {text!r} holds a NUL character; remove it")
            argv.append(text)
        if not argv[0]:
            raise PlanError(f"{where}: the program (argument 0) is an empty string; name the program to run")
        return argv
    raise PlanError(
        f"{where} {command!r} is neither a list of strings nor a string; give e.g. [sleep, '3600'] "
        "or one string such as 'sleep 3600'"
    )


def _check_pod_names(node: str, names: list, v: Mapping = PLAIN_NAMES) -> None:
    seen = set()
    for name in names:
        if not is_pod_name(name):
            label = "" if v is PLAIN_NAMES else f" ({v['pods']})"
            raise PlanError(
                f"pod name {name!r} on {node}{label} is not allowed: it becomes a network namespace and a "
                "file name, so it must be a DNS label (lower-case letters, digits and '-', starting "
                "and ending with a letter or digit, at most 63 characters), e.g. web-1"
            )
        if name in seen:
            raise PlanError(f"pod {name} is listed twice on {node}; pod names must be unique per node")
        seen.add(name)


def _pod_entries(node: str, request: Mapping, default_per_node, v: Mapping = ROLE_VARS) -> list[dict]:
    """The pods of one node request as ``[{name, ip, command}]``: explicit entries (a name
    or a mapping of the keys in POD_KEYS), then ``pods_per_node`` generated ones."""
    raw = request.get("pods")
    if raw is None:
        raw = []
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Iterable):
        raise PlanError(
            f"{v['pods']} of {node} {raw!r} is not a list; write a list of pod names or "
            "{name, ip, command} entries, e.g. [web, {name: db, command: 'sleep 3600'}]"
        )
    pods = []
    origin: dict[str, str] = {}
    for entry in raw:
        if isinstance(entry, str):
            entry = {"name": entry}
        elif not isinstance(entry, Mapping):
            raise PlanError(
                f"{v['pods']} of {node}: entry {entry!r} is not a pod name or a {{name, ip, command}} mapping"
            )
        if "name" not in entry:
            raise PlanError(f"{v['pods']} of {node}: entry {dict(entry)!r} has no name; add name: <pod name>")
        name = entry["name"]
        if not is_pod_name(name):
            _check_pod_names(node, [name], v)
        for key in entry:
            if key not in POD_KEYS:
                close = difflib.get_close_matches(str(key), POD_KEYS, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise PlanError(
                    f"pod {name} on {node} ({v['pods']}) has an unknown key {key!r}{hint}; a pod entry takes only "
                    f"{', '.join(POD_KEYS)}"
                )
        if name in origin:
            raise PlanError(
                f"pod {name} is listed twice on {node} ({v['pods']}); pod names must be unique per node"
            )
        origin[name] = v["pods"]
        pods.append({
            "name": name,
            "ip": entry.get("ip"),
            "command": check_command(node, name, entry.get("command"), v),
            "labels": entry.get("labels"),
            "_from": v["pods"],
        })
    per_node = request.get("pods_per_node", default_per_node)
    count = _integer(0 if per_node is None else per_node, v["pods_per_node"], 0, None, "a count",
                     f" on {node}", 3)
    for index in range(1, count + 1):
        name = f"{node}-pod-{index}"
        if not is_pod_name(name):
            raise PlanError(
                f"{v['pods_per_node']} of {node} makes pods named like {name!r}, which is not a DNS label "
                f"because the node name {node!r} is not one; list the pods in {v['pods']} instead"
            )
        if name in origin:
            raise PlanError(
                f"pod {name} is listed twice on {node}: in {origin[name]} and made by "
                f"{v['pods_per_node']} {count}; remove it from {v['pods']}"
            )
        origin[name] = v["pods_per_node"]
        pods.append({"name": name, "ip": None, "command": None, "_from": v["pods_per_node"]})
    return pods


def _check_unique_pods(pods_of: Mapping) -> None:
    """Pod names are unique across the cluster: reports (and later DNS) name pods alone.
    ``pods_of``: {node: [(pod name, where it comes from)]}."""
    seen: dict[str, tuple[str, str]] = {}
    for node in sorted(pods_of):
        for name, source in pods_of[node]:
            if name in seen and seen[name][0] != node:
                other, other_source = seen[name]
                raise PlanError(
                    f"pod {name} is declared on both {other} ({other_source}) and {node} ({source}); pod names "
                    "must be unique across the cluster (reports and DNS name a pod without its node): "
                    "rename one of them"
                )
            seen.setdefault(name, (node, source))


# --------------------------------------------------------------------------- backend and links


def _check_backend(backend, vxlan, v: Mapping = PLAIN_NAMES) -> dict:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise PlanError(f"{v['backend']} {backend!r} is not supported; use one of: {', '.join(BACKENDS)}")
    if vxlan is not None and not isinstance(vxlan, Mapping):
        raise PlanError(f"vxlan {vxlan!r} is not a mapping of vni, port and device")
    out = dict(DEFAULT_VXLAN)
    out.update({k: val for k, val in (vxlan or {}).items() if val is not None})
    unknown = sorted(set(out) - set(DEFAULT_VXLAN))
    if unknown:
        raise PlanError(f"vxlan has unknown keys {', '.join(map(repr, unknown))}; it takes vni, port and device")
    out["vni"] = _integer(out["vni"], v["vni"], 1, 16777215, example=1)
    out["port"] = _integer(out["port"], v["port"], 1, 65535, "a UDP port", example=8472)
    check_link_name(out["device"], v["device"])
    return {"vni": out["vni"], "port": out["port"], "device": out["device"]}


def _underlay(node: str, data) -> dict:
    data = dict(data or {})
    ip_raw = data.get("ip")
    if not ip_raw:
        raise PlanError(
            f"node {node} has no underlay IP; run flatnet.cluster.node_facts on it or set "
            "flatnet_underlay_interface / flatnet_underlay_ip for it"
        )
    ip = parse_address(str(ip_raw), f"underlay IP of {node}")
    prefix = data.get("prefix")
    if prefix is None:
        prefix = 32 if ip.version == 4 else 128
    try:
        network = IPNetwork(str(data.get("network") or f"{ip}/{prefix}")).cidr
    except (AddrFormatError, ValueError, TypeError):
        raise PlanError(
            f"underlay network {data.get('network')!r} of {node} is not a CIDR; re-gather facts with "
            "flatnet.cluster.node_facts"
        ) from None
    mtu = _integer(data.get("mtu") or 1500, f"underlay MTU of {node}", 68, None, "an MTU")
    return {
        "interface": data.get("interface"),
        "ip": str(ip),
        "prefix": network.prefixlen,
        "network": str(network),
        "mtu": mtu,
        "_ip": ip,
        "_net": network,
        "_chosen_by": data.get("chosen_by"),
    }


def _check_link_names(node: str, bridge: str, device: str, underlay: dict, v: Mapping) -> None:
    """The bridge, the VXLAN device and the underlay interface of a node are three links."""
    check_link_name(bridge, v["bridge"], f" on {node}")
    if bridge == device:
        raise PlanError(
            f"{v['bridge']} and {v['device']} are both {bridge!r} on {node}; the bridge and the VXLAN "
            f"device are two links: give them different names (defaults: {DEFAULT_BRIDGE}, {DEFAULT_VXLAN['device']})"
        )
    iface = underlay.get("interface")
    if iface is None:
        return
    chosen = underlay.get("_chosen_by")
    how = f"set by {v['underlay_interface']}" if chosen == "interface" else (
        f"found from the {chosen.replace('-', ' ')}" if isinstance(chosen, str) else "found by node_facts")
    problem = link_name_problem(iface)
    if problem is not None:
        raise PlanError(
            f"the underlay interface {iface!r} of {node} ({how}) {problem}; the collection names it in "
            f"ip commands: set {v['underlay_interface']} (or flatnet_underlay_ip) to another interface"
        )
    for label, name in ((v["bridge"], bridge), (v["device"], device)):
        if name == iface:
            fix = f"choose another {label}"
            if chosen == "interface":
                fix += f", or set {v['underlay_interface']} to the link that carries node-to-node traffic"
            raise PlanError(
                f"{label} {name!r} is the underlay interface of {node} ({how}); the collection would take "
                f"over the link that carries node-to-node traffic: {fix}"
            )
