# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Processes that run inside a pod's network namespace (pod workloads, probe agents).

A workload is the process *tree* that ``launch`` started, whatever it execs or forks. Its
identity, recorded as soon as it starts::

    {"sid": PID of the leader = its session id, "start_time": the leader's start time
     (/proc/PID/stat field 22), "boot_id": the kernel's boot id, "netns_inode": the pod's
     network namespace, "token": a random value put in the tree's environment}

Its members are the live processes in that network namespace that are either in the
session (when the leader is gone, or is still the recorded one, by start time) or carry the
token in their environment (``FLATNET_WORKLOAD_ID``). Linux never hands out a PID that is
still in use as a session id, so the session finds the tree after the leader exec'd,
forked or exited; the token finds processes that left the session (``setsid`` after a
fork) as long as they keep their environment. A daemon that does both (a new session and
a scrubbed environment) escapes: run commands in the foreground.

``alive``/``wait_started`` check a just-started PID and command line. ``spawn`` starts
any detached process (the lab's too).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time

from ansible_collections.flatnet.cluster.plugins.module_utils import procs
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import netns_inode
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import ENV

TOKEN_ENV = "FLATNET_WORKLOAD_ID"
# Seconds between TERM and KILL, and again for KILL to take effect.
GRACE = 3.0


def argv_of(command):
    """A workload command as an argument list: lists pass through, strings are split like a shell
    would split words, but nothing is ever run by a shell."""
    if command is None:
        return None
    if isinstance(command, (list, tuple)):
        return [str(a) for a in command]
    return shlex.split(str(command))


def spawn(argv, log_path, env=None, mode="ab"):
    """Start a long-lived process detached from the module: its own session, stdin from
    /dev/null, output to ``log_path``. Returns the Popen object.

    AnsibleModule.run_command waits for its command; daemons (workloads, lab nodes, agents)
    must outlive the module and must not hold the connection's pipes open.
    """
    with open(log_path, mode) as log, open(os.devnull, "rb") as null:
        # Popen, not run_command (ansible-core 2.21 sanity asks for it): see the docstring.
        return subprocess.Popen(  # pylint: disable=consider-using-with,ansible-bad-function
            list(argv),
            stdin=null,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd="/",
            close_fds=True,
            start_new_session=True,
            env=env if env is not None else dict(os.environ, **ENV),
        )


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _same_argv(cmdline, argv):
    """Whether a process command line is the recorded command.

    The command may sit behind an interpreter (a script's shebang puts it in front), and its
    program name may have been resolved to a full path on the way (PATH lookup by a wrapper
    such as a pyenv shim re-execs ``python3`` as ``/root/.pyenv/.../bin/python3``).
    """
    argv = list(argv)
    if not argv or len(cmdline) < len(argv):
        return False
    tail = cmdline[len(cmdline) - len(argv):]
    return tail[1:] == argv[1:] and os.path.basename(tail[0]) == os.path.basename(argv[0])


def alive(pid, argv, netns):
    """True when ``pid`` is running ``argv`` inside the named netns."""
    if not pid or not argv:
        return False
    state = _state(pid)
    if state is None or state in ("Z", "X"):
        return False
    cmdline = _cmdline(pid)
    if cmdline is None:
        return False
    # Right after fork the child may still be "ip netns exec NS ..." for an instant.
    if not _same_argv(cmdline, argv):
        return False
    inode = netns_inode(netns)
    try:
        return inode is not None and os.stat(f"/proc/{pid}/ns/net").st_ino == inode
    except OSError:
        return False


def wait_started(pid, argv, netns, timeout=2.0):
    """Wait until a just-started workload runs in its netns; False if it died at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive(pid, argv, netns):
            return True
        if _state(pid) in (None, "Z", "X"):
            return False
        time.sleep(0.02)
    return alive(pid, argv, netns)


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --- process trees (0.2) ---------------------------------------------------------


def launch(ip_bin, netns, argv, log_path, env=None):
    """Start ``argv`` detached in its own session inside the named netns; return its identity.

    ``Popen`` returns only after the child called ``setsid`` and exec'd ``ip``, so the
    leader's PID and start time are final here, before it runs the command.
    """
    os.makedirs(os.path.dirname(log_path), mode=0o755, exist_ok=True)
    token = os.urandom(16).hex()
    full_env = dict(os.environ, **ENV)
    full_env.update(env or {})
    full_env[TOKEN_ENV] = token
    proc = spawn([ip_bin, "netns", "exec", netns] + list(argv), log_path, env=full_env)
    st = procs.stat(proc.pid)
    return {
        "sid": proc.pid,
        "start_time": st["start_time"] if st else None,
        "boot_id": procs.boot_id(),
        "netns_inode": netns_inode(netns),
        "token": token,
    }


def _member_procs(ident, snap=None, proc=procs.PROC):
    """The live processes of the tree ``ident`` (``procs.snapshot`` entries)."""
    if not ident or not ident.get("sid") or not ident.get("netns_inode"):
        return []
    if ident.get("boot_id") and procs.boot_id(proc) not in (None, ident["boot_id"]):
        return []  # another boot: start times and PIDs mean nothing any more
    sid, t0, ns, token = ident["sid"], ident.get("start_time"), ident["netns_inode"], ident.get("token")
    leader = procs.stat(sid, proc)
    # A leader with another start time is a newer process under a recycled PID: its session
    # is not ours. Members of our session all started at or after our leader.
    session_ok = t0 is not None and (leader is None or leader["start_time"] == t0)
    snap = procs.snapshot(proc) if snap is None else snap
    found = []
    for p in snap:
        if p["netns"] != ns:
            continue
        if session_ok and p["session"] == sid and p["start_time"] >= t0:
            found.append(p)
        elif token and (procs.environ(p["pid"], proc) or {}).get(TOKEN_ENV) == token:
            found.append(p)
    return found


def members(ident, snap=None, proc=procs.PROC):
    """PIDs of the live processes of the tree ``ident`` (sorted)."""
    return sorted(p["pid"] for p in _member_procs(ident, snap, proc))


def in_netns(ns_inode, snap=None, proc=procs.PROC):
    """Live processes (``procs.snapshot`` entries) whose network namespace is ``ns_inode``."""
    snap = procs.snapshot(proc) if snap is None else snap
    return [p for p in snap if ns_inode and p["netns"] == ns_inode]


def wait_tree(ident, timeout=2.0):
    """Wait until a just-launched tree runs in its netns; False when it died at once."""
    deadline = time.monotonic() + timeout
    while True:
        if members(ident):
            return True
        st = procs.stat(ident["sid"])
        if st is None or st["state"] in procs.GONE:
            _reap(ident["sid"])
            # The leader may have left children behind (``cmd &``) a moment ago.
            return bool(members(ident))
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _send(p, sig):
    """Signal one process of a scan, only if it is still that process (same start time).

    A pidfd pins the process before the check, so a PID recycled in between is never
    signalled; without pidfds (Python < 3.9, Linux < 5.3) the window is a few microseconds.
    """
    pid = p["pid"]
    if pid in (0, 1, os.getpid(), os.getppid()):
        return False
    fd = None
    if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except OSError:
            fd = None
    try:
        st = procs.stat(pid)
        if st is None or st["start_time"] != p["start_time"] or st["state"] in procs.GONE:
            return False
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if fd is not None:
            os.close(fd)


def terminate(scan, grace=GRACE):
    """TERM every process ``scan()`` returns, wait up to ``grace`` seconds for them all to
    go, then KILL whatever a new scan finds (children forked meanwhile too) and wait again.

    Returns (PIDs signalled, PIDs still there at the end).
    """
    signalled = set()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        current = scan()
        if not current:
            break
        for p in current:
            if _send(p, sig):
                signalled.add(p["pid"])
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for pid in signalled:
                _reap(pid)
            if not scan():
                return sorted(signalled), []
            time.sleep(0.03)
    for pid in signalled:
        _reap(pid)
    return sorted(signalled), sorted(p["pid"] for p in scan())


def stop_tree(ident, grace=GRACE):
    """Stop the tree ``ident``: TERM, then KILL after ``grace``. Returns (signalled, left)."""
    return stop_trees([ident], grace)


def stop_trees(idents, grace=GRACE):
    """Stop several trees at once: one TERM round and one wait for all of them (a node's probe
    agents), instead of a process table scan per tree. Returns (signalled, left)."""
    idents = [ident for ident in idents if ident]
    if not idents:
        return [], []

    def scan():
        snap = procs.snapshot()
        return [p for ident in idents for p in _member_procs(ident, snap)]

    return terminate(scan, grace)


def own_netns_inode():
    return procs.netns_inode("self")


def stop_netns(ns_inode, grace=GRACE):
    """Stop every process of the network namespace ``ns_inode`` (a pod being deleted).

    Never the caller's own namespace: a pod namespace is never the node's.
    """
    if not ns_inode or ns_inode == own_netns_inode():
        return [], []
    return terminate(lambda: in_netns(ns_inode), grace)


def describe(pids, proc=procs.PROC):
    """``PID name`` for each PID, for action lines."""
    parts = []
    for pid in pids:
        st = procs.stat(pid, proc)
        parts.append(f"{pid} {st['comm']}" if st else str(pid))
    return ", ".join(parts)


def stop_procs(found, grace=GRACE):
    """Stop exactly the processes ``found`` (``procs.snapshot`` entries: PID and start time)."""
    keys = {(p["pid"], p["start_time"]) for p in found}
    if not keys:
        return [], []
    return terminate(lambda: [p for p in procs.snapshot() if (p["pid"], p["start_time"]) in keys], grace)
