# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pod addresses (controller side, pure functions): one address per pod and node block.

Stability sources, highest first: pins, addresses recorded on the node, the cached plan,
then the lowest free address (pods in sorted name order). A rerun that changes nothing on a
node takes a shortcut (_unchanged_pod_ips) that reads the cached texts instead of parsing them.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Mapping

from ansible_collections.flatnet.cluster.plugins.plugin_utils.node_blocks import (
    _address,
    _min_prefix_for,
    _reserved_offsets,
)
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import (
    _FAMILY_NAME,
    PLAIN_NAMES,
    AddrFormatError,
    IPAddress,
    IPNetwork,
    PlanError,
    _as_list,
    _by_family,
    _check_pod_names,
    parse_address,
    parse_network,
    require_netaddr,
)


@functools.lru_cache(maxsize=64)
def _last_octets(low: int, high: int, tail: str) -> frozenset:
    """The texts ``"<octet><tail>"`` of the last IPv4 octets low..high (canonical decimal)."""
    return frozenset(f"{octet}{tail}" for octet in range(low, high + 1))


def _unchanged_pod_ips(blocks: list[IPNetwork], pods: list[str], claims: list[tuple[str, object]]):
    """The pods' addresses when a rerun changes nothing on the node, else None.

    A rerun's common case: an IPv4 block of /24 or longer, the cached plan's pod entries for
    exactly these pods (as written: sorted by name, one ``ADDR/PREFIX`` each), and records on
    the node that are absent or say the same. Then the generic path (_assign_pod_ips) would keep
    every cached address as it is, and it is enough to check, with set operations over the
    node's texts instead of parsing each, that each one is a canonical usable address of the
    block and that no two pods share one. Anything else (pins, CNI ranges, a hand-edited or
    stale entry, another pod set, IPv6) returns None: the generic path decides, and refuses.
    """
    if len(blocks) != 1 or len(claims) != 2:
        return None
    block = blocks[0]
    (_recorded_source, recorded), (_cached_source, cached) = claims
    if block.version != 4 or block.prefixlen < 24 or not isinstance(cached, list) or len(cached) != len(pods):
        return None
    try:
        names = [p["name"] for p in cached]
        texts = [ips[0] for ips in [p["ips"] for p in cached] if isinstance(ips, list) and len(ips) == 1]
    except (TypeError, KeyError):
        return None
    if len(texts) != len(names) or names != sorted(pods):
        return None
    first = block.first
    head = f"{first >> 24}.{first >> 16 & 255}.{first >> 8 & 255}."
    tail = f"/{block.prefixlen}"
    size = len(head)
    last = [t[size:] for t in texts if isinstance(t, str) and t.startswith(head)]
    if (len(last) != len(texts) or len(set(last)) != len(last)
            or not _last_octets((first & 255) + 2, (first & 255) + (1 << (32 - block.prefixlen)) - 2,
                                tail).issuperset(last)):
        return None
    if recorded:  # records win over the cache: they must hold the same addresses
        if not isinstance(recorded, Mapping):
            return None
        cut = -len(tail)
        for name, text in zip(names, texts):
            held = recorded.get(name)
            if held is not None and held != [text[:cut]] and held != [text]:
                return None
    return {name: [text] for name, text in zip(names, texts)}


def _assign_pod_ips(
    node: str,
    blocks: list[IPNetwork],
    pods: list[str],
    pins: Mapping,
    claims: list[tuple[str, Mapping]],
    v: Mapping = PLAIN_NAMES,
    ceilings: Mapping | None = None,
) -> dict[str, list[str]]:
    """Give each pod one address per node block. ``claims``: [(source, {pod: ips})], soft.

    ``ceilings`` ({family: (last address for new pods, why)}) keeps new and pinned pods below
    the CNI share (see plugin_utils/cni_plan.py); addresses pods already have are kept.
    Phases: room, the rerun shortcut, pins, claims kept, free addresses, the texts.
    """
    by_family = {b.version: b for b in blocks}
    ceilings = ceilings or {}
    _check_room(node, blocks, pods, v)
    if not pins and not ceilings:
        kept = _unchanged_pod_ips(blocks, pods, claims)
        if kept is not None:
            return kept
    taken: dict[int, dict[int, str]] = {f: {} for f in by_family}
    pinned: set[tuple[int, int]] = set()
    result: dict[str, dict[int, IPAddress]] = {p: {} for p in pods}
    _pin_pod_ips(node, by_family, pins, ceilings, v, taken, pinned, result)
    missing = len(pods) * len(by_family) - sum(len(chosen) for chosen in result.values())
    texts, missing = _keep_claimed_ips(node, by_family, claims, taken, pinned, result, missing)
    if missing:  # else a rerun: every pod kept its address
        _allocate_free_ips(node, by_family, pods, ceilings, taken, result)
    # Integer ops format an address several times faster than netaddr or ipaddress: this loop
    # runs once per pod of the cluster. Kept claims reuse their text.
    fams = [(b.version, f"/{b.prefixlen}") for b in blocks]  # netaddr properties cost a call each
    out = {}
    for pod in sorted(pods):
        chosen = result[pod]
        kept = texts.get(pod)
        if kept is not None and len(kept) == len(fams):
            out[pod] = [kept[fam] for fam, _tail in fams]
        else:
            out[pod] = [(kept or {}).get(fam) or _address(int(chosen[fam]), fam) + tail for fam, tail in fams]
    return out


def _check_room(node: str, blocks: list[IPNetwork], pods: list[str], v: Mapping) -> None:
    """Every node block holds the node's pods."""
    for block in blocks:
        # usable_pod_count() without re-normalising the block: this runs once per node.
        usable = max(0, block.last - block.first + 1 - len(_reserved_offsets(block)))
        if len(pods) > usable:
            opt = v["node_prefix"] if block.version == 4 else v["node_prefix_v6"]
            raise PlanError(
                f"{node} has {len(pods)} pods but its block {block} holds only {usable} pod addresses; "
                f"run fewer pods on {node} or set {opt} to {_min_prefix_for(block.version, len(pods))} "
                "or shorter (needs a teardown when blocks already exist)"
            )


def _pin_pod_ips(node: str, by_family: Mapping, pins: Mapping, ceilings: Mapping, v: Mapping,
                 taken: dict, pinned: set, result: dict) -> None:
    """Check the pinned addresses and give them to their pods (in ``taken``, ``pinned``, ``result``)."""
    for pod in sorted(pins):
        if pod not in result:
            continue
        seen_fam: set[int] = set()
        for raw in _as_list(pins[pod]):
            what = f"ip of pod {pod} on {node}" if v is PLAIN_NAMES else f"{v['pods']} of {node}: ip of pod {pod}"
            ip = _pinned_address(raw, what, by_family)
            fam = ip.version
            if fam in seen_fam:
                raise PlanError(f"{what} pins two {_FAMILY_NAME[fam]} addresses; pin one per family")
            seen_fam.add(fam)
            block = by_family.get(fam)
            if block is None:
                raise PlanError(
                    f"{what} {ip} is {_FAMILY_NAME[fam]} but {node} has no {_FAMILY_NAME[fam]} pod block; "
                    f"pin an address of the node's block or add that family to {v['cluster_cidr']}"
                )
            if not block.first <= int(ip) <= block.last:
                raise PlanError(
                    f"{what} {ip} is outside the node's block {block}; pin an address inside {block} "
                    f"or move the pod to the node that owns {ip}"
                )
            if int(ip) in _reserved_offsets(block):
                role = ("the VTEP (network) address" if int(ip) == block.first
                        else "the gateway (bridge) address" if int(ip) == block.first + 1
                        else "the broadcast address")
                raise PlanError(
                    f"{what} {ip} is {role} of {block}; pin an address from "
                    f"{IPAddress(block.first + 2, fam)} upward"
                )
            if fam in ceilings and int(ip) > ceilings[fam][0]:
                raise PlanError(
                    f"{what} {ip} is in {ceilings[fam][1]}; pin an address from "
                    f"{IPAddress(block.first + 2, fam)} to {IPAddress(ceilings[fam][0], fam)}"
                )
            if int(ip) in taken[fam]:
                raise PlanError(
                    f"{what} {ip} is already pinned for pod {taken[fam][int(ip)]}; give each pod its own address"
                )
            taken[fam][int(ip)] = pod
            pinned.add((fam, int(ip)))
            result[pod][fam] = ip


def _pinned_address(raw, what: str, by_family: Mapping) -> IPAddress:
    """A pin as an address: bare, or with the prefix of the node block of its family."""
    text = raw
    if isinstance(raw, str) and "/" in raw:
        addr_text, plen = raw.split("/", 1)
        fam_block = None
        try:
            fam_block = by_family.get(IPAddress(addr_text).version)
        except (AddrFormatError, ValueError):
            pass
        if fam_block is not None and plen.strip() != str(fam_block.prefixlen):
            raise PlanError(
                f"{what} {raw} has prefix /{plen} but the node block is {fam_block}; "
                f"write the bare address {addr_text} or use /{fam_block.prefixlen}"
            )
        text = addr_text
    return parse_address(text, what)


def _keep_claimed_ips(node: str, by_family: Mapping, claims, taken: dict, pinned: set, result: dict,
                      missing: int) -> tuple[dict, int]:
    """Keep the addresses the claims (records, then the cache) give pods, when still free and
    in the block; returns the kept IPv4 texts and how many addresses are still missing."""
    reserved = {fam: _reserved_offsets(block) for fam, block in by_family.items()}
    bounds = {fam: (block.first, block.last) for fam, block in by_family.items()}
    suffix = {fam: f"/{block.prefixlen}" for fam, block in by_family.items()}
    # The text a kept IPv4 claim already has ("ADDR" or "ADDR/PREFIX"), reused for the output:
    # inet_pton accepts only the canonical dotted quad (no leading zeros, no spaces), so the
    # text is what formatting the parsed integer would give. A rerun then formats nothing.
    texts: dict[str, dict[int, str]] = {}  # pod -> family -> kept text
    # A rerun reads one claim per pod of the cluster: the loop parses them with inet_pton and
    # keeps its lookups local.
    pton, from_bytes, af4, af6 = socket.inet_pton, int.from_bytes, socket.AF_INET, socket.AF_INET6
    for source, mapping in claims:
        if not mapping or not missing:
            continue
        if isinstance(mapping, list):  # the cached plan's pod entries, [{name, ips, ...}], as written
            items = [(p["name"], p.get("ips")) for p in mapping if isinstance(p, dict) and isinstance(p.get("name"), str)]
            if any(items[i][0] > items[i + 1][0] for i in range(len(items) - 1)):
                items.sort(key=lambda item: item[0])  # hand-edited: the sorted order decides, as below
        else:
            items = [(pod, mapping[pod]) for pod in sorted(mapping)]
        for pod, values in items:
            chosen = result.get(pod)
            if chosen is None:
                continue
            for raw in (values if isinstance(values, list) else _as_list(values)):
                text = raw if isinstance(raw, str) else str(raw)
                addr, slash, plen = text.partition("/")
                try:
                    if ":" in addr:
                        ip, fam = from_bytes(pton(af6, addr), "big"), 6
                    else:
                        ip, fam = from_bytes(pton(af4, addr), "big"), 4
                except (OSError, ValueError):
                    continue
                if fam in chosen or fam not in by_family:
                    continue
                low, high = bounds[fam]
                if not low <= ip <= high or ip in reserved[fam]:
                    continue  # the node block changed (pin); the pod gets a fresh address
                holder = taken[fam].get(ip)
                if holder is not None:
                    if (fam, ip) in pinned and source == "recorded":
                        raise PlanError(
                            f"ip {_address(ip, fam)} pinned for pod {holder} on {node} is in use by pod {pod} "
                            f"({source}); pin another address, or remove pod {pod} first"
                        )
                    continue
                taken[fam][ip] = pod
                chosen[fam] = ip
                missing -= 1
                if fam == 4:
                    if not slash:
                        texts.setdefault(pod, {})[4] = text + suffix[4]
                    elif slash + plen == suffix[4]:
                        texts.setdefault(pod, {})[4] = text
    return texts, missing


def _allocate_free_ips(node: str, by_family: Mapping, pods: list[str], ceilings: Mapping, taken: dict,
                       result: dict) -> None:
    """Give the pods still without an address of a family the lowest free ones, in name order."""
    for fam, block in by_family.items():
        candidate = block.first + 2
        for pod in sorted(pods):
            if fam in result[pod]:
                continue
            while candidate in taken[fam]:
                candidate += 1
            if fam in ceilings and candidate > ceilings[fam][0]:
                room = ceilings[fam][0] - block.first - 1
                raise PlanError(
                    f"{node} has {len(pods)} pods but its block {block} holds only {room} pod addresses "
                    f"below {ceilings[fam][1]}, and none is left for pod {pod}; run fewer pods, give "
                    "CNI containers a smaller share (flatnet_cni_range 1/4, 1/8, ...) or use a larger node block"
                )
            taken[fam][candidate] = pod
            result[pod][fam] = candidate
            candidate += 1


def pod_ips(node_cidr, pods, existing=None, pins=None) -> dict[str, list[str]]:
    """Plan pod addresses in a node block (str or [v4, v6]): ``{pod: ["ip/prefix", ...]}``.

    ``pods`` is a list of pod names; ``existing`` and ``pins`` map pod name to an address
    or a list of addresses (one per family). Existing addresses are kept when still valid.
    """
    require_netaddr()
    blocks = _by_family([parse_network(c, "node pod CIDR") for c in _as_list(node_cidr)], "node pod CIDR")
    if not blocks:
        raise PlanError("node pod CIDR is empty; pass the node's block, e.g. 10.244.0.0/24")
    names = list(_as_list(pods))
    _check_pod_names("the node", names)
    return _assign_pod_ips("the node", blocks, names, pins or {}, [("existing", existing or {})])
