# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CNI share of a node block (controller side, pure functions).

Each node's pod CIDR is split in two: the collection's own pods get addresses from the
bottom (gateway + 1 upward), CNI-attached containers (host-local IPAM) get the top
``flatnet_cni_range`` share of the block, an aligned sub-block. Pods the collection made
before the split that sit in the top share keep their addresses (pods are never
renumbered): host-local is given the share minus those addresses, as several ranges of
one range set. Containers holding addresses pin the split: a change of the node block,
of the share, or switching CNI off is refused while any container holds an address that
would fall outside the CNI range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

try:
    from netaddr import AddrFormatError, IPAddress, IPNetwork
except ImportError:  # plan_inputs.require_netaddr() reports it
    AddrFormatError = ValueError
    IPAddress = IPNetwork = None

# The CNI network name: the conflist's "name", host-local's directory under /var/lib/cni/networks.
NETWORK_NAME = "flatnet"
DEFAULT_SHARE = "1/2"
SHARE_VAR = "flatnet_cni_range"
ENABLE_VAR = "flatnet_cni"
SHARE_RE = re.compile(r"\s*1\s*/\s*([0-9]+)\s*\Z")
MAX_DENOMINATOR = 1024


class CNIPlanError(Exception):
    """A problem with the CNI split; cluster_plan turns it into a PlanError."""


def parse_share(value, what: str = SHARE_VAR) -> int:
    """The denominator N of a share written "1/N" (N a power of two from 2 to 1024)."""
    match = SHARE_RE.match(value) if isinstance(value, str) else None
    denom = int(match.group(1)) if match else None
    if denom is None or denom < 2 or denom > MAX_DENOMINATOR or denom & (denom - 1):
        raise CNIPlanError(
            f"{what} {value!r} is not a share of the node block; write 1/N with N a power of two "
            f"from 2 to {MAX_DENOMINATOR}, e.g. 1/2 (the top half of each node's pod CIDR goes to "
            "CNI-attached containers) or 1/4"
        )
    return denom


def split_block(block, denom: int, node: str = "the node", what: str = SHARE_VAR) -> dict:
    """Split a node block: pods [first+2, pod_last], containers [cni_first, cni_last].

    ``cni_cidr`` is the aligned sub-block of the share; its last address is left out for
    IPv4 (the broadcast address of the node block).
    """
    bits = denom.bit_length() - 1
    if block.prefixlen + bits > (32 if block.version == 4 else 128):
        raise CNIPlanError(f"{what} 1/{denom} cannot split {node}'s block {block}; use a larger share such as 1/2")
    sub = IPNetwork(f"{IPAddress(block.last - (block.size // denom) + 1, block.version)}/{block.prefixlen + bits}")
    cni_first = sub.first
    cni_last = sub.last - 1 if block.version == 4 else sub.last
    pod_first = block.first + 2
    pod_last = cni_first - 1
    if pod_last < pod_first or cni_last - cni_first + 1 < 2:
        raise CNIPlanError(
            f"{what} 1/{denom} of {node}'s block {block} leaves no room: the collection's pods would get "
            f"{max(0, pod_last - pod_first + 1)} addresses and CNI containers {max(0, cni_last - cni_first + 1)}; "
            "use a share such as 1/2 or a larger node block (flatnet_node_prefix)"
        )
    return {"pod_first": pod_first, "pod_last": pod_last, "cni_first": cni_first, "cni_last": cni_last,
            "cni_cidr": str(sub)}


def segments(first: int, last: int, holes) -> list[tuple[int, int]]:
    """[first, last] without the addresses in ``holes``, as sorted closed intervals."""
    out = []
    start = first
    for hole in sorted(h for h in set(holes) if first <= h <= last):
        if hole > start:
            out.append((start, hole - 1))
        start = hole + 1
    if start <= last:
        out.append((start, last))
    return out


def container_ips(raw, node: str) -> dict[str, str]:
    """The host-local reservations a node reported: {ip: container id} (bad entries skipped)."""
    out = {}
    if not isinstance(raw, Mapping):
        return out
    for ip, owner in raw.items():
        try:
            addr = IPAddress(str(ip))
        except (AddrFormatError, ValueError, TypeError):
            continue
        out[str(addr)] = str(owner)
    return out


def _fam_name(version: int) -> str:
    return "IPv4" if version == 4 else "IPv6"


def check_containers(node: str, blocks, splits: Mapping | None, containers: Mapping, why: str) -> None:
    """Refuse a plan that would take addresses from running containers.

    ``splits`` maps family to :func:`split_block`'s result (None: CNI off); ``why`` says
    what changed, for the message.
    """
    by_family = {b.version: b for b in blocks}
    for ip_text, owner in sorted(containers.items()):
        ip = IPAddress(ip_text)
        block = by_family.get(ip.version)
        inside = block is not None and block.first <= int(ip) <= block.last
        split = (splits or {}).get(ip.version)
        in_share = inside and split is not None and split["cni_first"] <= int(ip) <= split["cni_last"]
        if in_share:
            continue
        if not inside:
            where = f"outside {node}'s planned block {block}" if block else f"an {_fam_name(ip.version)} block {node} would no longer have"
        elif split is None:
            where = f"in a block whose CNI share {ENABLE_VAR}: false gives back to the collection's pods"
        else:
            where = f"outside the new CNI range {split['cni_cidr']}"
        raise CNIPlanError(
            f"{node}: container {owner[:12]} holds {ip} (host-local, network {NETWORK_NAME}), {where}; "
            f"{why} is refused while containers hold addresses: stop and remove the containers "
            "on that node first (e.g. podman rm -f), then rerun"
        )


def cni_plan(node: str, blocks, splits: Mapping, pod_ips, gateways) -> dict:
    """The node's CNI entry of the plan: range CIDRs and host-local range sets.

    ``pod_ips``: every planned pod address of the node ("ip/prefix"); those inside the share
    (pods made before the split) are cut out of host-local's ranges.
    """
    held: dict[int, set[int]] = {}
    for text in pod_ips:
        ip = IPNetwork(str(text)).ip
        held.setdefault(ip.version, set()).add(int(ip))
    range_sets = []
    cidrs = []
    kept = []
    for block, gw in zip(blocks, gateways):
        split = splits[block.version]
        cidrs.append(split["cni_cidr"])
        inside = sorted(h for h in held.get(block.version, ()) if split["cni_first"] <= h <= split["cni_last"])
        kept += [str(IPAddress(h, block.version)) for h in inside]
        range_set = [
            {"subnet": str(block), "rangeStart": str(IPAddress(a, block.version)),
             "rangeEnd": str(IPAddress(b, block.version)), "gateway": gw.split("/")[0]}
            for a, b in segments(split["cni_first"], split["cni_last"], inside)
        ]
        if not range_set:
            raise CNIPlanError(
                f"{node}: the CNI range {split['cni_cidr']} is taken up entirely by the collection's pods "
                f"({', '.join(kept)}); use a larger {SHARE_VAR} share or remove those pods"
            )
        range_sets.append(range_set)
    return {
        "network": NETWORK_NAME,
        "range_cidrs": cidrs,
        "ranges": range_sets,
        "pod_addresses_in_range": kept,
    }
