# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CNI configuration of a node: the conflist, subnet.env, host-local reservations.

Pure functions (rendering, parsing) plus small readers of the files CNI leaves on a host.
Shared by the cni module, the verify role's container checks and the unit tests.
"""

from __future__ import annotations

import base64
import json
import os

# Debian 12's containernetworking-plugins 1.1.1 accept nothing newer (no GC, no STATUS).
CNI_VERSION = "1.0.0"
CONFLIST_NAME = "10-flatnet.conflist"
CONF_DIR = "/etc/cni/net.d"
DATA_DIR = "/var/lib/cni/networks"
CACHE_DIR = "/var/lib/cni/results"
SUBNET_ENV = "/run/flatnet/subnet.env"
PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
PLUGINS = ("bridge", "host-local", "portmap", "loopback")
PACKAGE = "containernetworking-plugins"
# Top-level key marking the conflist as the collection's; libcni and the plugins ignore it.
MARKER_KEY = "flatnet.cluster/managed"
MARKER = "written by the flatnet.cluster collection; edit the inventory, not this file"
# host-local's own files in a network directory, next to one file per reserved address.
HOST_LOCAL_FILES = ("lock",)
HOST_LOCAL_PREFIX = "last_reserved_ip."


def render_conflist(network, bridge, mtu, ranges, default_routes=None) -> dict:
    """The conflist document: bridge (+ host-local over ``ranges``), portmap, loopback.

    ``ranges``: one host-local range set per family, each a list of
    {subnet, rangeStart, rangeEnd, gateway}. The default route per family goes via the
    node's gateway (the bridge address), like the collection's own pods.
    """
    routes = []
    for range_set in ranges:
        if not range_set:
            continue
        routes.append({"dst": "::/0" if ":" in str(range_set[0]["subnet"]) else "0.0.0.0/0"})
    if default_routes is not None:
        routes = default_routes
    return {
        "cniVersion": CNI_VERSION,
        "name": network,
        MARKER_KEY: MARKER,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                # the collection's nftables masquerade egress, never pod to pod
                "ipMasq": False,
                "hairpinMode": False,
                "mtu": int(mtu),
                "ipam": {
                    "type": "host-local",
                    "ranges": [[dict(r) for r in range_set] for range_set in ranges],
                    "routes": routes,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }


def conflist_text(doc) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def render_subnet_env(cluster_cidrs, pod_cidrs, mtu, masquerade) -> str:
    """flannel's subnet.env shape: FLANNEL_NETWORK, FLANNEL_SUBNET (the gateway/prefix), MTU, IPMASQ."""
    v4 = [c for c in cluster_cidrs if ":" not in c]
    v6 = [c for c in cluster_cidrs if ":" in c]
    lines = []
    if v4:
        lines.append(f"FLANNEL_NETWORK={v4[0]}")
    for cidr in pod_cidrs:
        if ":" in cidr:
            continue
        lines.append(f"FLANNEL_SUBNET={gateway_of(cidr)}")
    if v6:
        lines.append(f"FLANNEL_IPV6_NETWORK={v6[0]}")
        for cidr in pod_cidrs:
            if ":" in cidr:
                lines.append(f"FLANNEL_IPV6_SUBNET={gateway_of(cidr)}")
    lines.append(f"FLANNEL_MTU={int(mtu)}")
    lines.append(f"FLANNEL_IPMASQ={'true' if masquerade else 'false'}")
    return "\n".join(lines) + "\n"


def gateway_of(cidr) -> str:
    """First host address of a CIDR with its prefix (10.244.1.0/24 -> 10.244.1.1/24)."""
    import ipaddress

    net = ipaddress.ip_network(cidr, strict=False)
    return f"{net.network_address + 1}/{net.prefixlen}"


def is_ours(text) -> bool:
    """Whether a conflist's text carries the collection's marker."""
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get(MARKER_KEY) == MARKER


def find_plugin_dir(dirs, plugins=PLUGINS):
    """(first directory holding every plugin, {dir: [missing plugins]})."""
    missing = {}
    for d in dirs:
        lacking = [p for p in plugins if not os.access(os.path.join(d, p), os.X_OK)]
        if not lacking:
            return d, missing
        missing[d] = lacking
    return None, missing


def reservations(data_dir, network):
    """host-local's reservations of a network: [{ip, container_id, ifname, file}]."""
    path = os.path.join(data_dir, network)
    out = []
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return out
    for name in names:
        if name in HOST_LOCAL_FILES or name.startswith(HOST_LOCAL_PREFIX):
            continue
        file = os.path.join(path, name)
        try:
            with open(file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        # host-local writes "ID\r\nIFNAME" (1.x); older versions wrote only the ID
        words = [line.strip() for line in lines if line.strip()]
        out.append({"ip": name, "container_id": words[0] if words else "",
                    "ifname": words[1] if len(words) > 1 else "eth0", "file": file})
    return out


def cached_result(cache_dir, network, container_id, ifname):
    """libcni's cached ADD result of an attachment (runtimes keep it for CHECK and DEL), or None."""
    path = os.path.join(cache_dir, f"{network}-{container_id}-{ifname}")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def check_stdin(conflist, plugin, prev_result) -> bytes:
    """What a runtime sends one plugin for CHECK: the plugin's config with name, version, prevResult."""
    conf = dict(plugin)
    conf["name"] = conflist["name"]
    conf["cniVersion"] = conflist["cniVersion"]
    conf["prevResult"] = prev_result
    return json.dumps(conf).encode()


def cached_config(doc):
    """The conflist a cached result was made with (libcni stores it base64-encoded), or None."""
    raw = (doc or {}).get("config")
    if not isinstance(raw, str):
        return None
    try:
        conf = json.loads(base64.b64decode(raw))
    except (ValueError, TypeError):
        return None
    return conf if isinstance(conf, dict) else None
