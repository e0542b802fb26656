# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The picture of a cluster: live node states (``flatnet.cluster.topology``) and the plan in,
a model with drift marks and a Graphviz DOT text out (controller side, pure).

The picture is drawn from the live state; the plan only says what is missing or extra. The
same states and plan give the same DOT text, byte for byte (everything is sorted, nothing
depends on time or dict order).
"""

from __future__ import annotations

import html
import ipaddress

from ansible_collections.flatnet.cluster.plugins.module_utils.names import RT_PROTO
from ansible_collections.flatnet.cluster.plugins.module_utils.peers_reconcile import PeersError, desired_state
from ansible_collections.flatnet.cluster.plugins.plugin_utils.peer_views import peers_of
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError

RT = str(RT_PROTO)

# Colours: a network engineer's usual green/blue/red, readable in print and for most colour-blind eyes
# (the drift is also written out, never shown by colour alone).
OK, VXLAN, DRIFT, EXTRA, MUTED = "#1b7837", "#2166ac", "#d6202b", "#b35806", "#777777"
# DejaVu (fonts-dejavu-core, in scripts/setup) lays the picture out; the SVG names fallbacks for
# viewers without it, of about the same width.
FONT = "DejaVu Sans,Arial,Helvetica,sans-serif"


def _net(text):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _ip(text):
    try:
        return ipaddress.ip_address(str(text).split("/", maxsplit=1)[0])
    except ValueError:
        return None


def _sort_ip(text):
    addr = _ip(text)
    return (addr.version, int(addr)) if addr else (9, 0)


def _sort_net(text):
    net = _net(text)
    return (net.version, int(net.network_address), net.prefixlen) if net else (9, 0, 0)


def _routes157(st):
    return [r for r in (st or {}).get("routes") or [] if r.get("protocol") == RT]


def lookup(routes, addr):
    """Longest-prefix match of ``addr`` in a node's live routes (default included)."""
    ip = _ip(addr)
    best, best_len = None, -1
    if ip is None:
        return None
    for r in routes:
        dst = r.get("dst")
        if r.get("family") and r["family"] != ip.version:
            continue
        net = _net("0.0.0.0/0" if ip.version == 4 else "::/0") if dst == "default" else _net(dst)
        if net is None or net.version != ip.version or ip not in net:
            continue
        if net.prefixlen > best_len:
            best, best_len = r, net.prefixlen
    return best


def plan_peers(plan, name):
    """A node's peers as the backend role derives them from the plan (``peers_of``)."""
    try:
        return peers_of(plan, name)
    except (PlanError, ValueError, TypeError):
        return []


def underlay_of(st, planned):
    """(ip, network, interface) of a node's underlay, live first, the plan's when unreadable."""
    ul = (st or {}).get("underlay") or {}
    addrs = ul.get("addrs") or []
    want = (planned or {}).get("ip")
    chosen = None
    for a in addrs:
        if want and a.split("/")[0] == want:
            chosen = a
            break
    if chosen is None and addrs:
        chosen = sorted(addrs, key=_sort_ip)[0]
    if chosen:
        iface = ipaddress.ip_interface(chosen)
        return str(iface.ip), str(iface.network), ul.get("interface"), chosen
    if planned and planned.get("ip"):
        net = planned.get("network") or (f"{planned['ip']}/{planned.get('prefix', 32)}")
        return planned["ip"], str(_net(net)), planned.get("interface"), None
    return None, None, ul.get("interface"), None


def build(live, plan=None, pod_limit=20, vxlan_device=None):
    """The model of the picture.

    ``live``: ``{node: topology}`` (the ``topology`` the module returned; None for a node
    without one). ``plan``: the ``flatnet_plan`` fact or None (then nothing is drift).
    """
    plan = plan or {}
    pnodes = plan.get("nodes") or {}
    vx = plan.get("vxlan") or {}
    device = vxlan_device or vx.get("device") or "flatnet.1"
    names = sorted(set(live) | set(pnodes))
    drift = []

    def mark(node, what):
        drift.append({"node": node, "what": what})

    # Who owns which pod CIDR: the plan, then the live bridges (a node the plan does not know).
    owner = {}
    for n in names:
        for c in (pnodes.get(n) or {}).get("pod_cidrs") or []:
            owner[str(_net(c))] = n
    for n in names:
        for a in ((live.get(n) or {}).get("bridge") or {}).get("addrs") or []:
            owner.setdefault(str(ipaddress.ip_interface(a).network), n)

    nodes = {}
    for n in names:
        st, pn = live.get(n), pnodes.get(n)
        ip, network, iface, with_prefix = underlay_of(st, (pn or {}).get("underlay"))
        node = {"name": n, "live": st is not None, "underlay_ip": ip, "network": network,
                "interface": iface, "underlay": with_prefix or (f"{ip}" if ip else None),
                "bridge": None, "vxlan": None, "pods": [], "routes": [], "drift": []}
        nodes[n] = node
        if st is None:
            mark(n, "no live state: the node could not be read (unreachable, or not in this run)")
            continue
        if plan and pn is None:
            mark(n, "node is not in the plan")
        _bridge(node, st, pn, plan, mark)
        _vxlan(node, st, pn, plan, device, mark)
        _pods(node, st, pn, plan, mark)
        _routes(node, st, pn, plan, owner, device, mark)

    for d in drift:
        nodes[d["node"]]["drift"].append(d["what"])

    subnets = {}
    for n in names:
        subnets.setdefault(nodes[n]["network"] or "unknown", []).append(n)
    router = _router(nodes, live, names)
    paths = _paths(nodes, names)
    summary = {
        "nodes": len(names),
        "pods": sum(1 for n in names for p in nodes[n]["pods"] if p["state"] != "missing"),
        "pods_up": sum(1 for n in names for p in nodes[n]["pods"] if p["state"] == "up"),
        "routes": sum(1 for n in names for r in nodes[n]["routes"] if r["state"] != "missing"),
        "drift": len(drift),
    }
    subnet_list = [{"network": k, "nodes": v} for k, v in sorted(subnets.items(), key=lambda kv: _sort_net(kv[0]))]
    return {"nodes": [nodes[n] for n in names], "subnets": subnet_list,
            "router": router, "paths": paths, "drift": drift, "pod_limit": pod_limit,
            "device": device, "summary": summary,
            "backend": plan.get("backend"), "mtu": plan.get("mtu")}


def _bridge(node, st, pn, plan, mark):
    br = st.get("bridge") or {}
    node["bridge"] = {"name": br.get("name"), "exists": br.get("exists"), "up": br.get("up"),
                      "addrs": sorted(br.get("addrs") or [], key=_sort_ip), "mtu": br.get("mtu")}
    if not plan or pn is None:
        return
    n = node["name"]
    if not br.get("exists"):
        mark(n, f"bridge {br.get('name')} missing")
        return
    if not br.get("up"):
        mark(n, f"bridge {br.get('name')} is down")
    for gw in pn.get("gateways") or []:
        if str(ipaddress.ip_interface(gw)) not in {str(ipaddress.ip_interface(a)) for a in br.get("addrs") or []}:
            mark(n, f"bridge {br.get('name')} lacks its gateway address {gw}")
    if plan.get("mtu") and br.get("mtu") and br["mtu"] != plan["mtu"]:
        mark(n, f"bridge {br.get('name')} MTU {br['mtu']} (planned {plan['mtu']})")


def _vxlan(node, st, pn, plan, device, mark):
    vx = st.get("vxlan") or {}
    if vx.get("exists"):
        node["vxlan"] = {"name": vx.get("name"), "vni": vx.get("vni"), "port": vx.get("port"),
                         "local": vx.get("local"), "up": vx.get("up"),
                         "addrs": sorted(vx.get("addrs") or [], key=_sort_ip)}
    if not plan or pn is None:
        return
    n = node["name"]
    wants = any(p.get("mode") == "vxlan" for p in plan_peers(plan, node["name"]))
    planned = plan.get("vxlan") or {}
    if wants and not vx.get("exists"):
        mark(n, f"VXLAN device {device} missing")
    elif wants:
        if not vx.get("up"):
            mark(n, f"VXLAN device {device} is down")
        if planned.get("vni") is not None and vx.get("vni") != int(planned["vni"]):
            mark(n, f"VXLAN device {device} has VNI {vx.get('vni')} (planned {planned['vni']})")
    elif vx.get("exists") and vx.get("ours"):
        mark(n, f"VXLAN device {device} present but no peer of the plan uses VXLAN")


def _pods(node, st, pn, plan, mark):
    n = node["name"]
    live = {p["name"]: p for p in st.get("pods") or []}
    planned = {p["name"]: p for p in (pn or {}).get("pods") or []}
    bridge = (st.get("bridge") or {}).get("name")
    for name in sorted(set(live) | set(planned)):
        lp, pp = live.get(name), planned.get(name)
        addrs = sorted((lp or {}).get("eth0", {}).get("addrs") or [], key=_sort_ip)
        want = sorted(pp.get("ips") or [], key=_sort_ip) if pp else []
        problems = []
        if lp is None or lp.get("netns") == "missing":
            state = "missing"
            problems.append("namespace missing")
        elif lp.get("netns") == "dead":
            state = "down"
            problems.append("namespace dead")
        else:
            eth0 = lp.get("eth0") or {}
            veth = lp.get("veth") or {}
            if not eth0.get("exists"):
                problems.append("no eth0")
            elif not eth0.get("up"):
                problems.append("eth0 down")
            elif not eth0.get("carrier"):
                problems.append("eth0 has no carrier")
            if not veth.get("exists"):
                problems.append(f"host veth {veth.get('name')} missing")
            else:
                if not veth.get("up"):
                    problems.append(f"host veth {veth.get('name')} down")
                if bridge and veth.get("master") != bridge:
                    problems.append(f"host veth {veth.get('name')} not on {bridge}")
            state = "down" if problems else "up"
            if pp is not None and addrs != want:
                problems.append(f"address {', '.join(addrs) or 'none'} (planned {', '.join(want)})")
                state = "drift" if state == "up" else state
        extra = bool(plan) and pn is not None and pp is None
        if extra and lp is not None and lp.get("netns") != "missing":
            problems.append("not in the plan")
            state = "extra" if state == "up" else state
        if lp is None and pp is None:
            continue
        if not plan or pn is None:
            # Without a plan only what the node itself shows is a problem.
            problems = [p for p in problems if p not in ("namespace missing", "not in the plan")]
            if lp is None or lp.get("netns") == "missing":
                continue
        if lp is not None and lp.get("netns") == "missing" and pp is None:
            continue
        node["pods"].append({"name": name, "addrs": addrs or want, "state": state, "problems": problems})
        if problems and (plan and pn is not None):
            mark(n, f"pod {name}: " + "; ".join(problems))


def _routes(node, st, pn, plan, owner, device, mark):
    n = node["name"]
    live = {}
    extra_dups = []
    for r in _routes157(st):
        key = str(_net(r["dst"])) if r["dst"] != "default" else "default"
        if key in live:
            extra_dups.append(r)
        else:
            live[key] = r
    want = {}
    if plan and pn is not None:
        vx = plan.get("vxlan") or {}
        try:
            desired = desired_state(plan_peers(plan, n), (pn.get("underlay") or {}).get("interface"),
                                    {"device": device, "vni": vx.get("vni"), "port": vx.get("port"),
                                     "local_ip": (pn.get("underlay") or {}).get("ip"), "mac": pn.get("vtep_mac"),
                                     "underlay_interface": (pn.get("underlay") or {}).get("interface")})
            want = {str(_net(k)): v for k, v in desired["routes"].items()}
        except PeersError as exc:
            mark(n, f"the plan's peers cannot be turned into routes: {exc}")
    vx = st.get("vxlan") or {}
    neigh = {x["ip"]: x["mac"] for x in vx.get("neigh") or []}
    fdb = {}
    for f in vx.get("fdb") or []:
        fdb.setdefault(f["mac"].lower(), f["dst"])
    for dst in sorted(set(live) | set(want), key=_sort_net):
        r, w = live.get(dst), want.get(dst)
        peer = (w.peer if w else None) or owner.get(dst)
        row = {"dst": dst, "peer": peer, "state": "ok", "problems": []}
        if r is not None:
            row.update(via=r.get("gateway"), dev=r.get("dev"), onlink=bool(r.get("onlink")),
                       mode="vxlan" if r.get("dev") == device else "direct")
            if row["mode"] == "vxlan":
                mac = neigh.get(r.get("gateway"))
                row["vtep_mac"] = mac
                row["remote"] = fdb.get((mac or "").lower())
                if plan and pn is not None:
                    if mac is None:
                        row["problems"].append(f"no neighbour entry for {r.get('gateway')} on {device}")
                    elif row["remote"] is None:
                        row["problems"].append(f"no FDB entry for {mac} on {device}")
        else:
            row.update(via=w.via, dev=w.dev, onlink=w.onlink, mode="vxlan" if w.dev == device else "direct")
        if w is not None and r is None:
            row["state"] = "missing"
            row["problems"].insert(0, "route missing")
        elif w is None and r is not None and plan and pn is not None:
            row["state"] = "extra"
            row["problems"].insert(0, "route not in the plan")
        elif w is not None and (r.get("gateway"), r.get("dev"), bool(r.get("onlink"))) != (w.via, w.dev, w.onlink):
            row["problems"].insert(0, f"route differs (planned {w.text()})")
        if w is not None and w.dev == device and r is not None:
            planned_remote = next((p.get("underlay_ip") for p in plan_peers(plan, n) if p["name"] == w.peer), None)
            if row.get("remote") and planned_remote and row["remote"] != planned_remote:
                row["problems"].append(f"FDB sends it to {row['remote']} (planned {planned_remote})")
        if row["problems"] and row["state"] == "ok":
            row["state"] = "drift"
        node["routes"].append(row)
        if row["problems"] and plan and pn is not None:
            text = f"{dst} via {row['via']} dev {row['dev']}" + (" onlink" if row["onlink"] else "")
            mark(n, f"route {text}" + (f" (to {peer})" if peer else "") + ": " + "; ".join(row["problems"]))
    for r in extra_dups:
        if plan and pn is not None:
            mark(n, f"route {r['dst']} via {r.get('gateway')} dev {r.get('dev')}: a second route of protocol "
                    f"{RT} to the same destination")


def _router(nodes, live, names):
    """Gateways each underlay subnet uses to reach nodes on other subnets (live routes)."""
    gws = {}
    for a in names:
        na = nodes[a]
        st = live.get(a)
        if st is None or not na["network"]:
            continue
        for b in names:
            nb = nodes[b]
            if a == b or not nb["underlay_ip"] or nb["network"] == na["network"]:
                continue
            r = lookup(st.get("routes") or [], nb["underlay_ip"])
            if r and r.get("gateway"):
                gws.setdefault(na["network"], set()).add(r["gateway"])
    if not gws:
        return None
    return {"gateways": {net: sorted(v, key=_sort_ip) for net, v in sorted(gws.items(), key=lambda kv: _sort_net(kv[0]))}}


def _paths(nodes, names):
    """One path per node pair that has a route either way: mode(s), and the drift of both directions."""
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ways = {}
            for s, d in ((a, b), (b, a)):
                rows = [r for r in nodes[s]["routes"] if r["peer"] == d]
                if rows:
                    ways[(s, d)] = rows
            if not ways:
                continue
            modes = sorted({r["mode"] for rows in ways.values() for r in rows if r["state"] != "missing"})
            problems = []
            for (s, d), rows in sorted(ways.items()):
                for r in rows:
                    if r["problems"]:
                        problems.append(f"{s}→{d} {r['dst']}: {r['problems'][0]}")
            vnis = sorted({nodes[s]["vxlan"]["vni"] for (s, _d), rows in ways.items()
                           if nodes[s]["vxlan"] and any(r["mode"] == "vxlan" for r in rows)})
            out.append({"a": a, "b": b, "modes": modes or sorted({r["mode"] for rows in ways.values() for r in rows}),
                        "vnis": vnis, "problems": problems})
    return out


# --- DOT --------------------------------------------------------------------------------------


def dot_id(text):
    """A DOT double-quoted ID."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def h(text):
    """Text for an HTML-like label: every markup character escaped."""
    return html.escape(str(text), quote=True)


def _row(cells, color=None, bold=False):
    out = []
    for text, span in cells:
        body = h(text)
        if bold:
            body = f"<B>{body}</B>"
        if color:
            body = f'<FONT COLOR="{color}">{body}</FONT>'
        span_attr = f' COLSPAN="{span}"' if span > 1 else ""
        out.append(f'<TD ALIGN="LEFT"{span_attr}>{body}</TD>')
    return "<TR>" + "".join(out) + "</TR>"


def _section(title):
    return f'<TR><TD ALIGN="LEFT" COLSPAN="3" BGCOLOR="#eeeeee"><I>{h(title)}</I></TD></TR>'


STATE_COLOR = {"up": None, "ok": None, "down": DRIFT, "missing": DRIFT, "drift": DRIFT, "extra": EXTRA}
STATE_WORD = {"up": "up", "ok": "", "down": "DOWN", "missing": "MISSING", "drift": "DRIFT", "extra": "EXTRA"}


def node_label(node, pod_limit):
    rows = []
    head = "#f6d5d5" if node["drift"] else "#dbe8f7"
    rows.append(f'<TR><TD COLSPAN="3" BGCOLOR="{head}"><B>{h(node["name"])}</B></TD></TR>')
    if not node["live"]:
        rows.append(_row([("no live state", 3)], DRIFT, True))
    ul = f"{node['interface'] or '?'} {node['underlay'] or '?'}"
    rows.append(_row([("underlay", 1), (ul, 2)]))
    br = node["bridge"]
    if br:
        if br["exists"]:
            text = f"{br['name']} " + (", ".join(br["addrs"]) or "no address") + " (gateway)"
            text += f" mtu {br['mtu']}" + ("" if br["up"] else " DOWN")
            rows.append(_row([("bridge", 1), (text, 2)], None if br["up"] and br["addrs"] else DRIFT))
        else:
            rows.append(_row([("bridge", 1), (f"{br['name']} MISSING", 2)], DRIFT))
    vx = node["vxlan"]
    if vx:
        text = f"{vx['name']} VNI {vx['vni']} udp {vx['port']} " + (", ".join(vx["addrs"]) or "")
        rows.append(_row([("vxlan", 1), (text.strip() + ("" if vx["up"] else " DOWN"), 2)],
                         None if vx["up"] else DRIFT))
    pods = node["pods"]
    if pods:
        live = [p for p in pods if p["state"] != "missing"]
        rows.append(_section(f"pods ({len(live)})"))
        if len(pods) > pod_limit:
            up = sum(1 for p in pods if p["state"] == "up")
            addrs = sorted((a for p in live for a in p["addrs"]), key=_sort_ip)
            span = f"{addrs[0].split('/')[0]} … {addrs[-1].split('/')[0]}" if addrs else "no addresses"
            rows.append(_row([(f"{len(live)} pods, {up} up", 1), (span, 2)]))
            bad = [p for p in pods if p["state"] != "up"]
            for p in bad[:pod_limit]:
                rows.append(_row([(p["name"], 1), (", ".join(p["addrs"]), 1),
                                  (STATE_WORD[p["state"]], 1)], STATE_COLOR[p["state"]]))
            if len(bad) > pod_limit:
                rows.append(_row([(f"… and {len(bad) - pod_limit} more pods with drift", 3)], DRIFT))
        else:
            for p in pods:
                rows.append(_row([(p["name"], 1), (", ".join(p["addrs"]) or "no address", 1),
                                  (STATE_WORD[p["state"]], 1)], STATE_COLOR[p["state"]]))
    if node["routes"]:
        rows.append(_section(f"routes to peers (proto {RT})"))
        for r in node["routes"]:
            via = f"via {r['via']} dev {r['dev']}" + (" onlink" if r["onlink"] else "")
            if r["mode"] == "vxlan":
                how = "VXLAN" + (f" → {r['remote']}" if r.get("remote") else "")
            else:
                how = "host-gw"
            to = f"{r['peer'] or 'no node'} {how}"
            word = STATE_WORD[r["state"]]
            rows.append(_row([(r["dst"], 1), (via, 1), (f"{to} {word}".strip(), 1)], STATE_COLOR[r["state"]]))
    return ('<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" COLOR="'
            + (DRIFT if node["drift"] else "#444444") + '">' + "".join(rows) + "</TABLE>>")


def to_dot(model, title=""):
    """The DOT text of the model (deterministic)."""
    out = ["graph flatnet {"]
    label = title or "flatnet"
    s = model["summary"]
    label += (f"\n{s['nodes']} nodes, {s['pods']} pods ({s['pods_up']} up), {s['routes']} routes to peers"
              + (f", backend {model['backend']}" if model.get("backend") else "")
              + (f", pod MTU {model['mtu']}" if model.get("mtu") else "")
              + (f" - DRIFT: {s['drift']}" if s["drift"] else " - no drift"))
    out.append(f"  graph [label={dot_id(label)} labelloc=t fontname=\"{FONT}\" fontsize=16 "
               f"compound=true newrank=true nodesep=0.5 ranksep=0.9 pad=0.3];")
    out.append(f'  node [shape=plaintext fontname="{FONT}" fontsize=11];')
    out.append(f'  edge [fontname="{FONT}" fontsize=10];')
    anchors = {}
    for i, sub in enumerate(model["subnets"]):
        out.append(f"  subgraph {dot_id(f'cluster_underlay_{i}')} {{")
        out.append(f"    graph [label={dot_id('underlay ' + sub['network'])} style=\"rounded,dashed\" "
                   f"color=\"#888888\" fontcolor=\"#444444\"];")
        out.append("    {rank=same; " + " ".join(dot_id("node:" + n) for n in sub["nodes"]) + "}")
        for n in sub["nodes"]:
            node = next(x for x in model["nodes"] if x["name"] == n)
            out.append(f"    {dot_id('node:' + n)} [id={dot_id('node_' + n)} label={node_label(node, model['pod_limit'])}];")
        out.append("  }")
        anchors[sub["network"]] = (i, sub["nodes"][len(sub["nodes"]) // 2])
    router = model.get("router")
    if router:
        text = "\n".join(["underlay router"] + [f"{net}: {', '.join(g)}" for net, g in router["gateways"].items()])
        out.append(f"  \"router\" [id=\"router\" shape=box style=\"rounded,filled\" fillcolor=\"#f2f2f2\" "
                   f"label={dot_id(text)}];")
        # Subnets alternate above and below the router, so that a path that crosses it is drawn across it.
        for net, gws in router["gateways"].items():
            if net in anchors:
                i, anchor = anchors[net]
                cluster = dot_id(f"cluster_underlay_{i}")
                ends = (f"{dot_id('node:' + anchor)} -- \"router\" [ltail={cluster}" if i % 2 == 0 else
                        f"\"router\" -- {dot_id('node:' + anchor)} [lhead={cluster}")
                out.append(f"  {ends} color=\"#888888\" penwidth=2 label={dot_id('gw ' + ', '.join(gws))}];")
    for p in model["paths"]:
        a, b = p["a"], p["b"]
        if p["problems"]:
            color, style = DRIFT, "dashed"
        elif "vxlan" in p["modes"]:
            color, style = VXLAN, "dashed"
        else:
            color, style = OK, "solid"
        words = []
        for m in p["modes"]:
            if m == "vxlan":
                words.append("VXLAN" + (" VNI " + "/".join(str(v) for v in p["vnis"]) if p["vnis"] else ""))
            else:
                words.append("host-gw")
        text = " + ".join(words)
        if p["problems"]:
            text += "\n" + "\n".join("DRIFT " + x for x in p["problems"])
        same_subnet = any(a in s["nodes"] and b in s["nodes"] for s in model["subnets"])
        out.append(f"  {dot_id('node:' + a)} -- {dot_id('node:' + b)} [id={dot_id(f'path_{a}_{b}')} "
                   f"color=\"{color}\" fontcolor=\"{color}\" style={style} penwidth=2 "
                   f"label={dot_id(text)}" + ("" if same_subnet else " constraint=false") + "];")
    if model["drift"]:
        rows = [f'<TR><TD ALIGN="LEFT"><B><FONT COLOR="{DRIFT}">drift against the plan ({len(model["drift"])})'
                f'</FONT></B></TD></TR>']
        for d in model["drift"]:
            rows.append(f'<TR><TD ALIGN="LEFT">{h(d["node"] + ": " + d["what"])}</TD></TR>')
        out.append('  "drift" [id="drift" label=<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" '
                   f'CELLPADDING="3" COLOR="{DRIFT}">' + "".join(rows) + "</TABLE>>];")
    legend = ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">'
              f'<TR><TD ALIGN="LEFT"><FONT COLOR="{OK}">━━ host-gw: route via the peer\'s underlay IP</FONT></TD></TR>'
              f'<TR><TD ALIGN="LEFT"><FONT COLOR="{VXLAN}">╍╍ VXLAN: route onlink via the peer\'s VTEP</FONT></TD></TR>'
              f'<TR><TD ALIGN="LEFT"><FONT COLOR="{DRIFT}">╍╍ drift: missing, extra or wrong against the plan'
              '</FONT></TD></TR></TABLE>>')
    out.append(f"  \"legend\" [id=\"legend\" label={legend}];")
    out.append("}")
    return "\n".join(out) + "\n"
