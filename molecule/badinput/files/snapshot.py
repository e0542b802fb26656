# SPDX-License-Identifier: GPL-3.0-or-later
"""Print, as a JSON list of lines, everything a flatnet run could change on this node: links,
addresses, routes, permanent neighbours, static FDB entries, namespaces and what is in
them, the nftables ruleset, processes, sysctls and the state files.

Left out on purpose: what changes by itself (counters, bridge timers, address lifetimes,
learned FDB and ARP entries, and the processes of this very snapshot and of the Ansible task running it).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

ENV = dict(os.environ, LC_ALL="C")
VOLATILE = {"valid_life_time", "preferred_life_time", "expires", "used", "updated", "stats",
            "stats64", "operstate", "linkmode", "ageing_timer"}


def run(*argv):
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=ENV, check=False)
    return proc.stdout if proc.returncode == 0 else f"rc={proc.returncode}: {proc.stderr.strip()}"


def scrub(value):
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in VOLATILE and not k.endswith("_timer")}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def ip_json(*argv, netns=None):
    out = run("ip", *(["-n", netns] if netns else []), "-json", *argv)
    try:
        return scrub(json.loads(out or "[]"))
    except ValueError:
        return out


def own_processes():
    """This process and its ancestors up to the node's PID 1 (the Ansible task running it)."""
    mine, pid = set(), os.getpid()
    while pid > 1:
        mine.add(pid)
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return mine


def processes():
    mine = own_processes()
    result = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
            netns = os.readlink(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if not argv:  # kernel threads, or a process that is just exiting
            continue
        result.append(f"{entry} {netns} {' '.join(argv)}")
    return sorted(result)


def files(top):
    result = {}
    for root, dirs, names in os.walk(top):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    result[path] = hashlib.sha256(f.read()).hexdigest()
            except OSError as exc:
                result[path] = str(exc)
    return result


def sysctls():
    result = {}
    for top in ("/proc/sys/net/ipv4/conf", "/proc/sys/net/ipv6/conf"):
        for dev in sorted(os.listdir(top)) if os.path.isdir(top) else []:
            for key in ("forwarding", "rp_filter", "accept_ra"):
                path = os.path.join(top, dev, key)
                if os.path.exists(path):
                    with open(path, encoding="ascii") as f:
                        result[path] = f.read().strip()
    for path in ("/proc/sys/net/ipv4/ip_forward",):
        with open(path, encoding="ascii") as f:
            result[path] = f.read().strip()
    return result


def main():
    netns = sorted(n for n in os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    snapshot = {
        "links": ip_json("-details", "link", "show"),
        "addresses": ip_json("addr", "show"),
        "routes4": ip_json("-4", "route", "show", "table", "all"),
        "routes6": ip_json("-6", "route", "show", "table", "all"),
        "neighbours": ip_json("neigh", "show", "nud", "permanent"),
        "fdb": [e for e in scrub(json.loads(run("bridge", "-json", "fdb", "show") or "[]"))
                if "permanent" in e.get("state", "") or "static" in e.get("state", "")
                or e.get("flags") or e.get("dst")],
        "netns": {n: {"inode": os.stat(f"/run/netns/{n}").st_ino,
                      "addresses": ip_json("addr", "show", netns=n),
                      "routes": ip_json("route", "show", "table", "all", netns=n),
                      "neighbours": ip_json("neigh", "show", "nud", "permanent", netns=n)}
                  for n in netns},
        "nftables": run("nft", "-s", "list", "ruleset"),
        "processes": processes(),
        "sysctls": sysctls(),
        "state_files": files("/var/lib/flatnet"),
        "etc_netns": files("/etc/netns"),
    }
    # One line per object, so that a difference shows as the lines that differ.
    lines = []
    for section, value in sorted(snapshot.items()):
        items = sorted(value.items()) if isinstance(value, dict) else value
        if isinstance(items, str):
            items = items.splitlines()
        for item in items:
            lines.append(f"{section}: {json.dumps(item, sort_keys=True)}")
    print(json.dumps(lines, indent=0))


if __name__ == "__main__":
    main()
