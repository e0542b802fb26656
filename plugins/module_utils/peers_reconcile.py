# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cross-node routing as pure data: what the peers module wants versus what the kernel has.

No Ansible objects and no processes here: the module reads ``ip -json`` / ``bridge -json``
output, hands it to these functions and applies the ``Plan`` they return. That keeps the
whole decision (including "nothing to do") testable with recorded outputs.

Private module_utils of flatnet.cluster: the API may change without notice.
"""

from __future__ import annotations

import ipaddress
import socket

from ansible_collections.flatnet.cluster.plugins.module_utils.names import ALIAS
from ansible_collections.flatnet.cluster.plugins.module_utils.names import RT_PROTO as _RT_PROTO
from ansible_collections.flatnet.cluster.plugins.module_utils.reconcile import Plan, addr_add_line

# ``ip -json`` prints the protocol number as a string; batch lines are strings too.
RT_PROTO = str(_RT_PROTO)


class PeersError(Exception):
    """A request the module must refuse before changing anything."""


def _v4_int(text):
    """The integer of a canonical dotted-quad IPv4 address, or None. inet_pton accepts only
    that form (no leading zeros, no spaces), so an accepted text is already canonical; it is
    also far cheaper than ipaddress, and a node with 1,000 peers parses thousands of them."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError, TypeError):
        return None


def _net(text):
    """A route destination as a canonical network string (``ip -json`` prints /32 hosts bare)."""
    if text == "default":
        return None
    if isinstance(text, str) and ":" not in text:
        addr, slash, plen = text.partition("/")
        value = _v4_int(addr)
        if value is not None:
            if not slash:
                return addr + "/32"
            if plen.isascii() and plen.isdigit() and plen == str(int(plen)) and int(plen) <= 32:
                host = (1 << (32 - int(plen))) - 1
                if not value & host:
                    return text
    return str(ipaddress.ip_network(text, strict=False))


def _addr(text):
    if isinstance(text, str) and _v4_int(text) is not None:
        return text
    return str(ipaddress.ip_address(text))


def _family(canonical):
    """4 or 6 for a canonical address or network string (as _addr and _net return them)."""
    return 6 if ":" in canonical else 4


def _mac(text):
    return str(text).lower()


# --- desired state -----------------------------------------------------------------------
class Route:
    """A route the collection owns: ``dst via [family] gateway dev DEV [onlink] proto 157``."""

    __slots__ = ("dst", "via", "dev", "onlink", "peer", "metric")

    def __init__(self, dst, via, dev, onlink=False, peer=None, metric=None):
        self.dst = dst
        self.via = via
        self.dev = dev
        self.onlink = bool(onlink)
        self.peer = peer
        self.metric = metric

    def key(self):
        return (self.dst, self.via, self.dev, self.onlink)

    def _via_words(self):
        if not self.via:
            return []
        dst_v = _family(self.dst)  # both canonical: made by _net and _addr
        via_v = _family(self.via)
        if dst_v == via_v:
            return ["via", self.via]
        # An IPv4 route through an IPv6 gateway (RTA_VIA, kernel >= 5.2).
        return ["via", "inet6" if via_v == 6 else "inet", self.via]

    def text(self):
        words = [self.dst] + self._via_words() + ["dev", self.dev]
        if self.onlink:
            words.append("onlink")
        return " ".join(words)

    def replace_argv(self):
        argv = ["route", "replace", self.dst] + self._via_words() + ["dev", self.dev]
        if self.onlink:
            argv.append("onlink")
        return argv + ["proto", RT_PROTO]

    def delete_argv(self):
        argv = ["route", "del", self.dst, "proto", RT_PROTO]
        if self.metric is not None:
            argv += ["metric", str(self.metric)]
        return argv


def desired_state(peers, underlay_interface, vxlan):
    """What the node should have for ``peers``.

    Returns a dict: ``routes`` {dst: Route}, ``neigh`` {vtep_ip: mac}, ``fdb`` {mac: underlay_ip},
    ``device`` (the VXLAN device spec, or None when no peer is vxlan), ``skipped`` (messages for
    pod CIDRs that cannot be routed and were left out) and ``direct_gateways`` {peer: ip}.
    """
    routes, neigh, fdb, skipped, direct = {}, {}, {}, [], {}
    vxlan = dict(vxlan or {})
    dev = vxlan.get("device") or "flatnet.1"
    any_vxlan = False
    for peer in sorted(peers, key=lambda p: p["name"]):
        name = peer["name"]
        mode = peer.get("mode") or "direct"
        underlay_ip = _addr(peer["underlay_ip"])
        cidrs = [_net(c) for c in peer.get("pod_cidrs") or []]
        if mode == "direct":
            if not underlay_interface:
                raise PeersError(f"peer {name} is direct but no underlay_interface was given")
            direct[name] = underlay_ip
            gw_v = _family(underlay_ip)
            for cidr in cidrs:
                if _family(cidr) == 6 and gw_v == 4:
                    skipped.append(
                        f"peer {name}: IPv6 pod CIDR {cidr} not routed: the kernel has no IPv6 route "
                        f"through an IPv4 gateway ({underlay_ip}); use backend vxlan for dual-stack "
                        "pods over an IPv4 underlay"
                    )
                    continue
                _put(routes, Route(cidr, underlay_ip, underlay_interface, peer=name))
        elif mode == "vxlan":
            any_vxlan = True
            if not peer.get("vtep_mac"):
                raise PeersError(f"peer {name} is vxlan but has no vtep_mac")
            mac = _mac(peer["vtep_mac"])
            fdb[mac] = underlay_ip
            vteps = {}
            for ip in peer.get("vtep_ips") or []:
                ip = _addr(ip)
                vteps.setdefault(_family(ip), ip)
            for cidr in cidrs:
                vtep = vteps.get(_family(cidr))
                if vtep is None:
                    skipped.append(f"peer {name}: pod CIDR {cidr} not routed: no VTEP IP of its family")
                    continue
                neigh[vtep] = mac
                _put(routes, Route(cidr, vtep, dev, onlink=True, peer=name))
        else:
            raise PeersError(f"peer {name}: unknown mode {mode!r} (direct or vxlan)")

    device = None
    if any_vxlan:
        missing = [k for k in ("local_ip", "mac") if not vxlan.get(k)]
        link = vxlan.get("underlay_interface") or underlay_interface
        if not link:
            missing.append("underlay_interface")
        if missing:
            raise PeersError("a peer is vxlan but vxlan." + ", vxlan.".join(missing) + " is not set")
        device = {
            "name": dev,
            "vni": int(vxlan.get("vni") or 1),
            "port": int(vxlan.get("port") or 8472),
            "local": _addr(vxlan["local_ip"]),
            "link": link,
            "mac": _mac(vxlan["mac"]),
            "mtu": int(vxlan["mtu"]) if vxlan.get("mtu") else None,
            "addresses": sorted(_iface(a) for a in vxlan.get("addresses") or []),
        }
    return {"routes": routes, "neigh": neigh, "fdb": fdb, "device": device,
            "skipped": skipped, "direct_gateways": direct, "device_name": dev}


PEER_MODES = ("direct", "vxlan")
PEER_KEYS = ("name", "mode", "underlay_ip", "pod_cidrs", "vtep_ips", "vtep_mac")


def check_peers(entries):
    """The ``peers`` option, checked here instead of by Ansible's suboptions (whose checks of
    1,000 entries cost more than the rest of an unchanged run): each entry is a mapping of
    PEER_KEYS or a peer line (parse_peer_line). Returns mappings with every key set; raises
    PeersError naming the entry and the field."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise PeersError(f"peers must be a list of peers, not {type(entries).__name__}")
    result = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            result.append(parse_peer_line(entry, index))
            continue
        if not isinstance(entry, dict):
            raise PeersError(f"peers[{index}] is a {type(entry).__name__}, not a mapping or a peer line")
        unknown = sorted(str(k) for k in entry if k not in PEER_KEYS)
        if unknown:
            raise PeersError(f"peers[{index}] has unknown keys {', '.join(unknown)}; "
                             f"a peer takes {', '.join(PEER_KEYS)}")
        where = f"peers[{index}]" + (f" ({entry['name']})" if isinstance(entry.get("name"), str) else "")
        peer = {}
        for key in ("name", "underlay_ip"):
            value = entry.get(key)
            if not isinstance(value, str) or not value:
                raise PeersError(f"{where}: {key} is required and must be a string, got {value!r}")
            peer[key] = value
        mode = entry.get("mode")
        mode = "direct" if mode is None else mode
        if mode not in PEER_MODES:
            raise PeersError(f"{where}: mode {mode!r} is not one of {', '.join(PEER_MODES)}")
        peer["mode"] = mode
        for key in ("pod_cidrs", "vtep_ips"):
            value = entry.get(key)
            value = [] if value is None else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise PeersError(f"{where}: {key} must be a list of strings, got {value!r}")
            peer[key] = value
        mac = entry.get("vtep_mac")
        if mac is not None and not isinstance(mac, str):
            raise PeersError(f"{where}: vtep_mac must be a string, got {mac!r}")
        peer["vtep_mac"] = mac
        result.append(peer)
    return result


def peer_line(peer):
    """A peer as one line: ``NAME MODE UNDERLAY_IP POD_CIDRS VTEP_IPS VTEP_MAC``, lists joined
    with commas, ``-`` for an empty list or no MAC. One string per peer keeps the module's
    arguments small: Ansible loads, copies and scans every value of them."""
    fields = [peer["name"], peer.get("mode") or "direct", peer["underlay_ip"],
              ",".join(peer.get("pod_cidrs") or []) or "-", ",".join(peer.get("vtep_ips") or []) or "-",
              peer.get("vtep_mac") or "-"]
    for field in fields:
        if not isinstance(field, str) or not field or any(c.isspace() for c in field):
            raise PeersError(f"peer {peer.get('name')!r}: {field!r} cannot be a field of a peer line "
                             "(empty, not a string, or with white space)")
    return " ".join(fields)


def parse_peer_line(line, index=0):
    """The mapping of a peer line (peer_line), or PeersError naming the entry."""
    parts = line.split()
    if len(parts) != 6:
        raise PeersError(f"peers[{index}] {line!r} is not a peer line: write NAME MODE UNDERLAY_IP "
                         "POD_CIDRS VTEP_IPS VTEP_MAC (lists joined with commas, - for none)")
    name, mode, underlay_ip, cidrs, vteps, mac = parts
    if mode not in PEER_MODES:
        raise PeersError(f"peers[{index}] ({name}): mode {mode!r} is not one of {', '.join(PEER_MODES)}")
    return {"name": name, "mode": mode, "underlay_ip": underlay_ip,
            "pod_cidrs": [] if cidrs == "-" else cidrs.split(","),
            "vtep_ips": [] if vteps == "-" else vteps.split(","),
            "vtep_mac": None if mac == "-" else mac}


def _iface(text):
    """A device address with its prefix; a bare VTEP IP becomes /32 or /128."""
    return str(ipaddress.ip_interface(text))


def _put(routes, route):
    if route.dst in routes:
        raise PeersError(
            f"pod CIDR {route.dst} is declared by both {routes[route.dst].peer} and {route.peer}"
        )
    routes[route.dst] = route


# --- current state -----------------------------------------------------------------------
def parse_routes(route_json):
    """Split ``ip -json route show table main`` (one or both families) into ours and foreign.

    Returns (ours {dst: Route}, extra [Route], foreign {dst: protocol}); ``extra`` holds further
    proto-157 routes to a destination already in ``ours`` (other metrics), always deleted.
    """
    ours, extra, foreign = {}, [], {}
    for r in route_json:
        dst = _net(r.get("dst", "default"))
        if dst is None or r.get("type", "unicast") != "unicast":
            continue
        proto = str(r.get("protocol", "boot"))
        if proto != RT_PROTO:
            foreign.setdefault(dst, proto)
            continue
        via = r.get("gateway") or (r.get("via") or {}).get("host")
        route = Route(dst, _addr(via) if via else None, r.get("dev"),
                      onlink="onlink" in (r.get("flags") or []), metric=r.get("metric"))
        if dst in ours:
            extra.append(route)
        else:
            ours[dst] = route
    return ours, extra, foreign


def connected_networks(route_json, dev):
    """Networks reachable on-link through ``dev``: its routes without a gateway (connected)."""
    nets = []
    for r in route_json:
        if r.get("dev") != dev or r.get("gateway") or r.get("via"):
            continue
        if r.get("type", "unicast") != "unicast":
            continue
        dst = _net(r.get("dst", "default"))
        if dst is not None:
            nets.append(ipaddress.ip_network(dst))
    return nets


def check_direct_on_link(direct_gateways, route_json, dev):
    """Fail (PeersError) naming each direct peer whose underlay IP is not on-link for ``dev``."""
    nets = connected_networks(route_json, dev)
    bad = []
    for name, ip in sorted(direct_gateways.items()):
        addr = ipaddress.ip_address(ip)
        if not any(addr.version == n.version and addr in n for n in nets):
            bad.append(f"{name} ({ip})")
    if bad:
        raise PeersError(
            "direct (host-gw) peers must be on the same link as " + dev + ", but these are not: "
            + ", ".join(bad) + "; use flatnet_backend vxlan or auto for them"
        )


def parse_neigh(neigh_json):
    """``ip -json neigh show dev DEV`` → {ip: {"mac": mac, "permanent": bool}}."""
    result = {}
    for n in neigh_json:
        if "dst" not in n:
            continue
        state = n.get("state") or []
        result[_addr(n["dst"])] = {"mac": _mac(n.get("lladdr", "")) or None,
                                   "permanent": "PERMANENT" in state}
    return result


def parse_fdb(fdb_json):
    """``bridge -json fdb show dev DEV`` → list of (mac, dst, permanent), only entries with a dst."""
    result = []
    for f in fdb_json:
        if not f.get("dst") or not f.get("mac"):
            continue
        result.append((_mac(f["mac"]), _addr(f["dst"]), f.get("state") == "permanent"))
    return result


def parse_device(link):
    """The comparable fields of a VXLAN link from ``ip -json -details link show``."""
    if not link:
        return None
    kind = (link.get("linkinfo") or {}).get("info_kind")
    data = (link.get("linkinfo") or {}).get("info_data") or {}
    local = data.get("local") or data.get("local6")
    return {
        "name": link.get("ifname"),
        "kind": kind,
        "ours": link.get("ifalias") == ALIAS,
        "vni": data.get("id"),
        "port": data.get("port"),
        "local": _addr(local) if local else None,
        "link": data.get("link"),
        "learning": data.get("learning", True),
        "mac": _mac(link.get("address", "")),
        "mtu": link.get("mtu"),
        "up": "UP" in (link.get("flags") or []),
    }


def parse_addrs(addr_json):
    """Global addresses of a link from ``ip -json addr show dev DEV`` as interface strings."""
    result = []
    for link in addr_json:
        for a in link.get("addr_info") or []:
            if a.get("scope") == "global":
                result.append(_iface(f"{a['local']}/{a['prefixlen']}"))
    return sorted(result)


# --- the difference ----------------------------------------------------------------------
def _new_plan():
    """A reconcile ``Plan`` of three batches: ``ip_pre`` (device, addresses, stale routes,
    neighbours), ``fdb`` (one ``bridge -batch``), ``ip_post`` (routes, device removal)."""
    plan = Plan()
    plan.ip_pre = plan.batch("ip")
    plan.fdb = plan.batch("bridge")
    plan.ip_post = plan.batch("ip")
    return plan


def plan_present(desired, routes, device, dev_addrs, neigh, fdb, retire=()):
    """Actions that turn the current state into ``desired``.

    ``routes`` is what ``parse_routes`` returned; ``device`` is ``parse_device`` of the link
    named like our VXLAN device (None if missing); ``neigh``/``fdb``/``dev_addrs`` are read
    from that device (empty when it is missing or not ours). ``retire``: ``parse_device`` of
    old VXLAN devices under other names (a renamed device) that the caller found recorded as
    ours and marked; they are deleted first, with whatever routes they carry.
    """
    cur_routes, extra, foreign = routes
    plan = _new_plan()
    spec = desired["device"]
    dev = desired["device_name"]

    conflicts = sorted(d for d in desired["routes"] if d in foreign)
    if conflicts:
        raise PeersError(
            "routes to peer pod CIDRs already exist and are not flatnet's (proto not 157): "
            + ", ".join(f"{d} (proto {foreign[d]})" for d in conflicts)
            + "; remove them or fix the overlapping pod CIDR"
        )
    if device is not None and not device["ours"] and spec is not None:
        raise PeersError(f"link {dev} exists and is not flatnet's (no ifalias {ALIAS}); "
                         "remove it or choose another flatnet_vxlan_device")

    # An old device goes first: it may hold the same VNI and port, which the kernel allows
    # only once; its routes, neighbour and FDB entries go with it.
    gone = set()
    for old in retire:
        plan.ip_pre.append(["link", "del", old["name"]])
        plan.actions.append(f"delete old vxlan device {old['name']} (now {dev})"
                            if spec is not None else f"delete old vxlan device {old['name']}")
        gone.add(old["name"])
    if gone:
        cur_routes = {d: r for d, r in cur_routes.items() if r.dev not in gone}
        extra = [r for r in extra if r.dev not in gone]

    # Whatever lives on a device that is deleted or recreated goes with it.
    device_gone = False
    if spec is None:
        if device is not None and device["ours"]:
            device_gone = True
    elif device is None:
        _create_device(plan, spec)
        device_gone = True
    else:
        why = _device_mismatch(spec, device)
        if why:
            plan.ip_pre.append(["link", "del", dev])
            _create_device(plan, spec, why)
            device_gone = True
        else:
            if device["mac"] != spec["mac"]:
                plan.ip_pre.append(["link", "set", dev, "address", spec["mac"]])
                plan.actions.append(f"set {dev} address {spec['mac']}")
            if spec["mtu"] and device["mtu"] != spec["mtu"]:
                plan.ip_pre.append(["link", "set", dev, "mtu", str(spec["mtu"])])
                plan.actions.append(f"set {dev} mtu {spec['mtu']}")
            if not device["up"]:
                plan.ip_pre.append(["link", "set", dev, "up"])
                plan.actions.append(f"set {dev} up")
    if device_gone:
        dev_addrs, neigh, fdb = [], {}, []
        cur_routes = {d: r for d, r in cur_routes.items() if r.dev != dev}
        extra = [r for r in extra if r.dev != dev]

    if spec is not None:
        for a in spec["addresses"]:
            if a not in dev_addrs:
                plan.ip_pre.append(addr_add_line(a, dev))
                plan.actions.append(f"add address {a} dev {dev}")
        for a in dev_addrs:
            if a not in spec["addresses"]:
                plan.ip_pre.append(["addr", "del", a, "dev", dev])
                plan.actions.append(f"delete address {a} dev {dev}")

    # Stale routes go first, before the neighbour and FDB entries they use.
    stale = [r for d, r in sorted(cur_routes.items()) if d not in desired["routes"]] + extra
    for route in stale:
        plan.ip_pre.append(route.delete_argv())
        plan.actions.append(f"delete route {route.text()}")

    if spec is not None:
        for ip, mac in sorted(desired["neigh"].items()):
            have = neigh.get(ip)
            if have is None or have["mac"] != mac or not have["permanent"]:
                plan.ip_pre.append(["neigh", "replace", ip, "lladdr", mac, "dev", dev, "nud", "permanent"])
                plan.actions.append(f"{'add' if have is None else 'replace'} neighbour {ip} lladdr {mac} dev {dev}")
        for ip, have in sorted(neigh.items()):
            if ip not in desired["neigh"] and have["permanent"]:
                plan.ip_pre.append(["neigh", "del", ip, "dev", dev])
                plan.actions.append(f"delete neighbour {ip} dev {dev}")

        wanted = desired["fdb"]
        present = {(mac, dst) for mac, dst, perm in fdb if perm}
        for mac, dst, perm in sorted(fdb):
            if wanted.get(mac) != dst:
                plan.fdb.append(["fdb", "del", mac, "dev", dev, "dst", dst, "self"])
                plan.actions.append(f"delete fdb {mac} dst {dst} dev {dev}")
        for mac, dst in sorted(wanted.items()):
            if (mac, dst) not in present:
                plan.fdb.append(["fdb", "replace", mac, "dev", dev, "dst", dst, "self", "permanent"])
                plan.actions.append(f"add fdb {mac} dst {dst} dev {dev}")

    # Routes last, so a VXLAN peer's neighbour and FDB entries exist before traffic can flow.
    for dst, route in sorted(desired["routes"].items()):
        have = cur_routes.get(dst)
        if have is None:
            plan.ip_post.append(route.replace_argv())
            plan.actions.append(f"add route {route.text()}")
        elif have.key() != route.key():
            plan.ip_post.append(route.replace_argv())
            plan.actions.append(f"replace route {have.text()} with {route.text()}")

    if spec is None and device is not None and device["ours"]:
        plan.ip_post.append(["link", "del", dev])
        plan.actions.append(f"delete vxlan device {dev}")
    return plan


def _device_mismatch(spec, device):
    """Why the existing device cannot be fixed in place (vni, port, local, underlay), or ''."""
    diffs = []
    if device["kind"] != "vxlan":
        return f"it is a {device['kind'] or 'plain'} link"
    for key in ("vni", "port", "local", "link"):
        if device[key] != spec[key]:
            diffs.append(f"{key} {device[key]} -> {spec[key]}")
    if device["learning"]:
        diffs.append("learning on")
    return ", ".join(diffs)


def _create_device(plan, spec, why=None):
    dev = spec["name"]
    argv = ["link", "add", dev, "address", spec["mac"]]
    if spec["mtu"]:
        argv += ["mtu", str(spec["mtu"])]
    argv += ["type", "vxlan", "id", str(spec["vni"]), "local", spec["local"], "dev", spec["link"],
             "dstport", str(spec["port"]), "nolearning"]
    plan.ip_pre.append(argv)
    plan.ip_pre.append(["link", "set", dev, "alias", ALIAS, "up"])
    plan.actions.append(
        (f"recreate vxlan device {dev} ({why}) as (" if why else f"create vxlan device {dev} (")
        + f"vni {spec['vni']}, port {spec['port']}, local {spec['local']}, "
        f"dev {spec['link']}, address {spec['mac']}"
        + (f", mtu {spec['mtu']})" if spec["mtu"] else ")")
    )


def plan_absent(routes, devices):
    """Delete every proto-157 route and the given VXLAN devices (``parse_device`` entries the
    caller found recorded as ours); a device without ifalias flatnet is never deleted."""
    cur_routes, extra, _foreign = routes
    plan = _new_plan()
    for route in [r for _d, r in sorted(cur_routes.items())] + extra:
        plan.ip_pre.append(route.delete_argv())
        plan.actions.append(f"delete route {route.text()}")
    if devices is not None and not isinstance(devices, (list, tuple)):
        devices = [devices]
    for device in devices or []:
        if device is not None and device["ours"]:
            plan.ip_post.append(["link", "del", device["name"]])
            plan.actions.append(f"delete vxlan device {device['name']}")
    return plan


def recorded_devices(record):
    """Names of the VXLAN devices ``peers.json`` records as made by the module: the current
    one and any old one a rename left to delete (``retired``)."""
    names = set(record.get("retired") or [])
    if record.get("device"):
        names.add(record["device"])
    return sorted(n for n in names if isinstance(n, str) and n)


def render(routes, device, dev_addrs, neigh, fdb):
    """A stable text picture of the routing state, for --diff."""
    lines = []
    if device is not None:
        lines.append(
            f"vxlan {device['name']} vni {device['vni']} port {device['port']} local {device['local']} "
            f"dev {device['link']} address {device['mac']} mtu {device['mtu']}"
        )
        lines += [f"address {a} dev {device['name']}" for a in sorted(dev_addrs)]
    lines += [f"neighbour {ip} lladdr {mac}" for ip, mac in sorted(neigh.items())]
    lines += [f"fdb {mac} dst {dst}" for mac, dst in sorted(fdb)]
    lines += [f"route {r.text()}" for r in sorted(routes, key=lambda r: r.dst)]
    return "\n".join(lines) + ("\n" if lines else "")


def render_current(routes, device, dev_addrs, neigh, fdb):
    routes = list(routes[0].values()) + routes[1]
    shown_dev = device if device is not None and device["ours"] else None
    return render(routes, shown_dev, dev_addrs if shown_dev else [],
                  {ip: n["mac"] for ip, n in neigh.items() if n["permanent"]} if shown_dev else {},
                  [(m, d) for m, d, p in fdb if p] if shown_dev else [])


def render_desired(desired):
    return render(list(desired["routes"].values()), desired["device"],
                  desired["device"]["addresses"] if desired["device"] else [],
                  desired["neigh"], sorted(desired["fdb"].items()))
