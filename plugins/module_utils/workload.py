# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Processes that run inside a pod's network namespace (pod workloads, probe agents).

A process is only ever treated as ours when its PID, its command line and its network
namespace all match what was recorded, so a recycled PID is never signalled.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time

from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import netns_inode


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
        return subprocess.Popen(  # pylint: disable=consider-using-with
            list(argv),
            stdin=null,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd="/",
            close_fds=True,
            start_new_session=True,
            env=env if env is not None else dict(os.environ, LC_ALL="C"),
        )


def start(ip_bin, netns, argv, log_path):
    """Start ``argv`` detached inside the named netns; return its PID.

    ``ip netns exec`` execs the command after entering the namespace, so the PID of the
    child is the workload's own.
    """
    os.makedirs(os.path.dirname(log_path), mode=0o755, exist_ok=True)
    return spawn([ip_bin, "netns", "exec", netns] + list(argv), log_path).pid


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


def ns_inode_of(pid):
    """Inode of the network namespace of ``pid``, or None."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def running_in(pid, argv, ns_inode):
    """True when ``pid`` runs ``argv`` in the network namespace with inode ``ns_inode``.

    This also finds a workload whose named netns was deleted by hand: the namespace lives
    on as long as the process holds it, under the inode that was recorded.
    """
    if not pid or not argv or not ns_inode:
        return False
    if _state(pid) in (None, "Z", "X"):
        return False
    cmdline = _cmdline(pid)
    return cmdline is not None and _same_argv(cmdline, argv) and ns_inode_of(pid) == ns_inode


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


def stop(pid, argv, netns=None, timeout=3.0, ns_inode=None):
    """Stop a recorded workload (TERM, then KILL), only if it is still the recorded process.

    The namespace is checked by name (``netns``) or by the recorded inode (``ns_inode``);
    with neither, only the command line is. Returns True when something was signalled.
    """
    if not pid or not argv:
        return False
    cmdline = _cmdline(pid)
    if cmdline is None or not _same_argv(cmdline, argv):
        return False
    if ns_inode is not None and ns_inode_of(pid) != ns_inode:
        return False
    if netns is not None and ns_inode is None and not alive(pid, argv, netns):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _state(pid) in (None, "Z", "X"):
                _reap(pid)
                return True
            time.sleep(0.02)
    return True


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
