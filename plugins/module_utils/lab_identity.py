# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors

"""Identity of a lab node: what M(flatnet.cluster.lab) records when it starts a node and
what the P(flatnet.cluster.nsenter#connection) connection checks before every command.

A PID alone names nothing for long (a crash, PID reuse, a typo): a node is the process
with that PID *and* that start time in that boot, living in those namespaces. The record
is ``<state_dir>/<lab>/<node>/identity.json``, root-only, written with fsync and rename.
"""

from __future__ import annotations

import json
import os

from ansible_collections.flatnet.cluster.plugins.module_utils import procs

RECORD = "identity.json"
# The namespaces nsenter enters; each is compared as (st_dev, st_ino) of /proc/PID/ns/NS.
NAMESPACES = ("net", "mnt", "uts", "pid")
# Namespaces that must never be the controller's own: entering them is touching the machine.
HOST_NAMESPACES = ("net", "mnt")
BOOT_ID = "/proc/sys/kernel/random/boot_id"


class IdentityError(Exception):
    """The record is missing, unreadable or not trustworthy."""


def boot_id():
    with open(BOOT_ID, encoding="ascii") as f:
        return f.read().strip()


def proc_stat(pid):
    """(state, starttime) of a process (proc(5) fields 3 and 22), None when it is gone."""
    st = procs.stat(pid)
    return None if st is None else (st["state"], st["start_time"])


def ns_key(st):
    return [st.st_dev, st.st_ino]


def controller_namespaces():
    """The controller's own (dev, ino) per namespace in HOST_NAMESPACES."""
    return {ns: ns_key(os.stat(f"/proc/self/ns/{ns}")) for ns in HOST_NAMESPACES}


def live_identity(pid):
    """What the kernel says about PID now, or None when it is gone (or a zombie)."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return None
    try:
        namespaces = {ns: ns_key(os.stat(f"/proc/{pid}/ns/{ns}")) for ns in NAMESPACES}
    except OSError:
        return None
    return {"pid": int(pid), "starttime": st[1], "boot_id": boot_id(), "ns": namespaces}


def open_namespaces(pid):
    """(live identity, {ns: fd}) of PID with its namespaces held open, or (None, {}).

    The start time is read *after* the namespaces are opened: when it matches the record,
    the process was the node all along (a PID is not reused while its process lives), so
    the fds are the node's, and entering them by fd leaves no window for PID reuse. The
    caller closes the fds (close_fds)."""
    fds = {}
    try:
        for ns in NAMESPACES:
            fds[ns] = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        st = proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            raise OSError("gone")
        live = {"pid": int(pid), "starttime": st[1], "boot_id": boot_id(),
                "ns": {ns: ns_key(os.fstat(fd)) for ns, fd in fds.items()}}
    except OSError:
        close_fds(fds)
        return None, {}
    return live, fds


def close_fds(fds):
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass


def write_private(path, text):
    """Write a root-only file atomically (fsync, rename, fsync of the directory)."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_record(node_dir, identity, lab, node):
    record = dict(identity, lab=lab, node=node, version=1)
    write_private(os.path.join(node_dir, RECORD), json.dumps(record, sort_keys=True) + "\n")
    return record


def read_record(path):
    """The record at PATH; IdentityError if missing, corrupt or writable by anyone but root."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise IdentityError(f"there is no identity record {path}")
    except OSError as e:
        raise IdentityError(f"cannot read the identity record {path}: {e}")
    try:
        st = os.fstat(fd)
        # Only root may vouch for a node: a record others could write proves nothing.
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise IdentityError(f"the identity record {path} is not root-only (uid {st.st_uid}, mode {st.st_mode & 0o777:o})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(65536)
    finally:
        os.close(fd)
    try:
        record = json.loads(data)
        int(record["pid"]), int(record["starttime"]), str(record["boot_id"])
        for ns in NAMESPACES:
            dev, ino = record["ns"][ns]
            int(dev), int(ino)
    except (ValueError, KeyError, TypeError) as e:
        raise IdentityError(f"the identity record {path} is corrupt ({e.__class__.__name__}: {e})")
    return record


def mismatches(record, live, controller=None):
    """What differs between a record and the live process (empty list: it is the node).

    ``live`` is live_identity() (None: gone); ``controller`` is controller_namespaces()."""
    problems = []
    if live is None:
        return [f"process {record.get('pid')} is gone"]
    for ns in HOST_NAMESPACES:
        if controller and live["ns"].get(ns) == controller.get(ns):
            problems.append(f"process {live['pid']} lives in the controller's own {ns} namespace")
    if int(record["pid"]) != live["pid"]:
        problems.append(f"the lab recorded PID {record['pid']} for this node, not {live['pid']}")
    if str(record["boot_id"]) != live["boot_id"]:
        problems.append("the machine was rebooted since the lab recorded the node (boot id differs)")
    elif int(record["starttime"]) != live["starttime"]:
        problems.append(
            f"process {live['pid']} started at tick {live['starttime']}, the node at tick {record['starttime']} "
            "(the PID now belongs to another process)"
        )
    for ns in NAMESPACES:
        rec, cur = list(record["ns"][ns]), list(live["ns"][ns])
        if rec != cur:
            other = " (on another device)" if rec[1] == cur[1] else ""
            problems.append(f"{ns} namespace {cur[1]} is not the node's {rec[1]}{other}")
    return problems
