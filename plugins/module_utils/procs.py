# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure readers of ``/proc``: command line, environment, stat fields, network namespace.

Every function takes the ``/proc`` root as ``proc`` so tests can point it at a fake tree
(``PID/stat``, ``PID/cmdline``, ``PID/environ``, a ``PID/ns/net`` symlink to ``net:[INODE]``,
``sys/kernel/random/boot_id``, ``uptime``). Nothing here signals or changes anything.
A process that vanishes while it is read reads as None.
"""

from __future__ import annotations

import os

PROC = "/proc"
GONE = ("Z", "X", "x")  # zombie, dead: states of a process that will never run again


def _read(path, mode="rb"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def pids(proc=PROC):
    """PIDs of every process visible in ``proc`` (in that mount's PID namespace)."""
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


def cmdline(pid, proc=PROC):
    """Arguments of ``pid`` as strings, or None when it is gone (``[]`` for a kernel thread)."""
    raw = _read(f"{proc}/{pid}/cmdline")
    if raw is None:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def environ(pid, proc=PROC):
    """The environment ``pid`` was exec'd with, as a dict, or None when unreadable."""
    raw = _read(f"{proc}/{pid}/environ")
    if raw is None:
        return None
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def parse_stat(text):
    """Fields of a ``/proc/PID/stat`` line that identify a process and its tree.

    The command name (field 2) may hold spaces and parentheses, so the fields are split
    after its last ``)``. Field numbers are those of proc(5).
    """
    try:
        head, rest = text.rsplit(")", 1)
        fields = rest.split()
        return {
            "pid": int(head.split("(", 1)[0]),
            "comm": head.split("(", 1)[1],
            "state": fields[0],  # 3
            "ppid": int(fields[1]),  # 4
            "pgid": int(fields[2]),  # 5
            "session": int(fields[3]),  # 6
            "start_time": int(fields[19]),  # 22, clock ticks after boot
        }
    except (ValueError, IndexError):
        return None


def stat(pid, proc=PROC):
    """``parse_stat`` of ``pid``, or None when it is gone."""
    raw = _read(f"{proc}/{pid}/stat", "r")
    return None if raw is None else parse_stat(raw)


def netns_inode(pid, proc=PROC):
    """Inode of the network namespace of ``pid`` (from the ``net:[INODE]`` link), or None."""
    try:
        link = os.readlink(f"{proc}/{pid}/ns/net")
    except OSError:
        return None
    if not (link.startswith("net:[") and link.endswith("]")):
        return None
    try:
        return int(link[5:-1])
    except ValueError:
        return None


def boot_id(proc=PROC):
    """The kernel's boot id: start times (ticks after boot) only compare within one boot."""
    raw = _read(f"{proc}/sys/kernel/random/boot_id", "r")
    return raw.strip() if raw else None


def uptime(proc=PROC):
    """Seconds since boot (the clock of ``start_time``), or None."""
    raw = _read(f"{proc}/uptime", "r")
    try:
        return float(raw.split()[0])
    except (AttributeError, ValueError, IndexError):
        return None


def clock_ticks():
    """Ticks per second of ``start_time`` (USER_HZ)."""
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


def snapshot(proc=PROC):
    """Every live process once: a list of ``stat`` dicts, each with its ``netns`` inode.

    Zombies are left out: they hold no namespace and never run again.
    """
    result = []
    for pid in pids(proc):
        st = stat(pid, proc)
        if st is None or st["state"] in GONE:
            continue
        st["netns"] = netns_inode(pid, proc)
        if st["netns"] is None:
            continue  # gone meanwhile, or a zombie whose namespaces were already released
        result.append(st)
    return result


def session_members(sid, proc=PROC, netns=None):
    """Live processes whose session is ``sid`` (optionally only those in netns ``netns``)."""
    return [p["pid"] for p in snapshot(proc)
            if p["session"] == sid and (netns is None or p["netns"] == netns)]
