# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors
"""The one place where flatnet.cluster modules talk to the kernel through iproute2.

Every call is an argument list (never a shell string) run with LC_ALL=C. State is read
with ``ip -json``; changes are applied with ``ip -batch`` so that a node's whole
reconcile costs a handful of processes, whatever the number of pods or peers.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os

from ansible_collections.flatnet.cluster.plugins.module_utils.netns import NoNetns, in_netns

# Routes the collection makes carry this protocol number, so that reconciling never
# touches a route someone else made.
RT_PROTO = 157

# ifalias values mark links as ours; links without the marker are never touched.
ALIAS = "flatnet"
POD_ALIAS_PREFIX = "flatnet pod "

NETNS_DIR = "/run/netns"


def veth_name(pod):
    """Host end of a pod's veth: ``veth`` + 8 hex characters of the pod name's digest."""
    return "veth" + hashlib.sha256(pod.encode("utf-8")).hexdigest()[:8]


def derived_mac(seed, first_octet="0a"):
    """A stable MAC for ``seed``: ``first_octet`` (locally administered, unicast) + the first
    5 bytes of its SHA-256. Pods, bridges and VTEPs each get theirs from a seed of their own, so
    a rebuilt link keeps its MAC and its neighbours' entries stay right."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return ":".join([first_octet] + [f"{b:02x}" for b in digest[:5]])


def bridge_mac(bridge, gateways):
    """The node bridge's MAC, derived from its name and lowest gateway address (locally
    administered, unicast), or None without a gateway. A bridge left to pick its own MAC
    takes its lowest port's, which changes as pods come and go; the pods' static
    neighbour entries for the gateway need one that never does."""
    ips = sorted((ipaddress.ip_interface(str(g)).ip for g in gateways or []),
                 key=lambda a: (a.version, a))
    if not ips:
        return None
    return derived_mac(f"flatnet-bridge:{bridge}:{ips[0]}")


class IPError(Exception):
    """An iproute2 command failed; the message carries the command and its stderr."""


class IPRoute2:
    """Thin wrapper over the ``ip`` binary for one module run."""

    ENV = {"LC_ALL": "C", "LANGUAGE": "C"}

    def __init__(self, module):
        self.module = module
        self.ip = module.get_bin_path("ip", required=True)

    # --- running -----------------------------------------------------------------
    def run(self, argv, data=None, check=True):
        """Run ``ip ARGV``; return (rc, stdout, stderr). Raise IPError when check and rc != 0."""
        cmd = [self.ip] + [str(a) for a in argv]
        rc, out, err = self.module.run_command(
            cmd, data=data, binary_data=True, environ_update=self.ENV, check_rc=False
        )
        if check and rc != 0:
            raise IPError(f"{' '.join(cmd)} failed (rc={rc}): {err.strip() or out.strip()}")
        return rc, out, err

    def json(self, argv, netns=None):
        """Run ``ip [-n NETNS] -json ARGV`` and decode its output (``[]`` when empty)."""
        prefix = ["-n", netns] if netns else []
        _rc, out, _err = self.run(prefix + ["-json"] + list(argv))
        out = out.strip()
        return json.loads(out) if out else []

    def batch(self, lines, netns=None, force=False):
        """Apply iproute2 commands (each an argument list) in one ``ip -batch -`` process.

        With force, iproute2 goes on after a failing line and the combined error is raised
        at the end; without it, it stops at the first failure.
        """
        if not lines:
            return
        text = "\n".join(" ".join(_quote(str(a)) for a in line) for line in lines) + "\n"
        argv = (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
        self.run(argv, data=text)

    def json_batch(self, lines, netns=None, family=None, details=False):
        """Run several ``-json`` show commands in one ``ip -batch`` process; one decoded
        result per line, in order. ``family`` (4 or 6) and ``details`` apply to every line:
        iproute2 takes them only as global options (route dumps default to IPv4)."""
        if not lines:
            return []
        text = "\n".join(" ".join(_quote(str(a)) for a in line) for line in lines) + "\n"
        argv = (["-n", netns] if netns else []) + ([f"-{family}"] if family else []) + (
            ["-details"] if details else [])
        _rc, out, _err = self.run(argv + ["-json", "-batch", "-"], data=text)
        return decode_stream(out)

    def many(self, jobs, parallel=32):
        """Run independent ``ip [-n NETNS] [-F] [-json] -batch -`` jobs concurrently.

        ``jobs``: ``{key: (lines, netns, family, as_json)}``. Returns ``{key: decoded docs}``
        (``None`` for non-json jobs); raises IPError naming the first failed job. This is the
        per-pod fan-out: AnsibleModule.run_command costs ~15 ms a call, which one process per
        pod cannot afford at 100 pods; argument lists only, never a shell. A job's ``ip``
        starts inside its namespace (setns before the spawn) rather than with ``ip -n``,
        which remounts /sys in every process.
        """
        import subprocess

        env = dict(os.environ, **self.ENV)
        results, errors = {}, []
        items = list(jobs.items())
        for start in range(0, len(items), parallel):
            running = []
            for key, (lines, ns, family, as_json) in items[start:start + parallel]:
                opts = ([f"-{family}"] if family else []) + (["-json"] if as_json else []) + ["-batch", "-"]
                label = " ".join([self.ip] + (["-n", ns] if ns else []) + opts)
                text = "\n".join(" ".join(_quote(str(a)) for a in line) for line in lines) + "\n"
                try:
                    with in_netns(ns):
                        proc = subprocess.Popen([self.ip] + opts, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                env=env, close_fds=True)
                except NoNetns as exc:
                    errors.append(f"{label} failed: {exc.strerror}")
                    continue
                running.append((key, label, proc, text.encode("utf-8")))
            for key, label, proc, data in running:
                out, err = proc.communicate(data)
                if proc.returncode != 0:
                    errors.append(f"{label} failed (rc={proc.returncode}): "
                                  f"{err.decode('utf-8', 'replace').strip()}")
                    continue
                results[key] = decode_stream(out) if jobs[key][3] else None
        if errors:
            raise IPError("; ".join(errors))
        return results

    # --- reading -----------------------------------------------------------------
    def links(self, netns=None):
        """Links by name: ``{name: link}`` with ``ip -json -details link``'s fields."""
        return {link["ifname"]: link for link in self.json(["-details", "link", "show"], netns)}

    def addrs(self, netns=None):
        """Addresses by link name: ``{name: ["10.0.0.1/24", ...]}`` (global scope only)."""
        result = {}
        for link in self.json(["addr", "show"], netns):
            result[link["ifname"]] = [
                f"{a['local']}/{a['prefixlen']}"
                for a in link.get("addr_info", [])
                if a.get("scope") == "global"
            ]
        return result

    def routes(self, netns=None, family=4, table="main", proto=None):
        """Routes of one family in one table; optionally only those of protocol ``proto``."""
        argv = [f"-{family}", "route", "show", "table", table]
        if proto is not None:
            argv += ["proto", proto]
        return self.json(argv, netns)

    def netns_list(self):
        """Names of the named network namespaces of this host (``/run/netns``)."""
        try:
            return sorted(n for n in os.listdir(NETNS_DIR) if not n.startswith("."))
        except FileNotFoundError:
            return []


def decode_stream(text):
    """Decode concatenated JSON documents (what ``ip -json -batch`` prints)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    docs, pos, end = [], 0, len(text)
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return docs
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)


def is_up(link):
    """Administratively up (the UP flag; operstate stays DOWN on a bridge without ports)."""
    return "UP" in link.get("flags", [])


def global_addrs(link):
    """Global-scope addresses of one ``ip -json addr`` link entry, as ``ip/prefix``."""
    return [
        f"{a['local']}/{a['prefixlen']}"
        for a in link.get("addr_info", [])
        if a.get("scope") == "global"
    ]


def netns_inode(name):
    """Inode of a named netns file, or None when it is missing or dead (not a nsfs mount)."""
    path = os.path.join(NETNS_DIR, name)
    try:
        st = os.stat(path)
    except OSError:
        return None
    # A live named netns is an nsfs bind mount; a leftover plain file has st_dev of /run.
    try:
        if st.st_dev == os.stat(NETNS_DIR).st_dev:
            return None
    except OSError:
        return None
    return st.st_ino


def _quote(word):
    """Quote a word for ``ip -batch`` (which splits on blanks and honours double quotes)."""
    if word and all(c not in word for c in ' \t"\\#'):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sysctl_path(name):
    """/proc/sys path of a dotted sysctl name; the interface part may itself hold dots
    (``net.ipv4.conf.flatnet.1.rp_filter``)."""
    parts = name.split(".")
    if len(parts) > 5 and parts[0] == "net" and parts[2] in ("conf", "neigh"):
        parts = parts[:3] + [".".join(parts[3:-1]), parts[-1]]
    return "/proc/sys/" + "/".join(parts)


def read_sysctl(name):
    """Value of a sysctl as a string, or None when it does not exist."""
    try:
        with open(sysctl_path(name), encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def write_sysctl(name, value):
    with open(sysctl_path(name), "w", encoding="ascii") as f:
        f.write(str(value))
