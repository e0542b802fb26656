# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors
"""Entering a named network namespace from the calling thread only (setns).

Sockets keep the namespace they were created in, and a child process starts in its
parent thread's, so this lets one process probe from many pods, or start a plain ``ip``
in a pod without ``ip -n`` remounting /sys for every pod (about 1 ms a process).
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

_libc = None


def setns(fd):
    """setns(fd, CLONE_NEWNET) for the calling thread (os.setns from Python 3.12 on)."""
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class NoNetns(OSError):
    """The named network namespace cannot be opened."""


@contextmanager
def in_netns(name):
    """Run the body in the named network namespace (``/run/netns/NAME``), in this thread only;
    a false ``name`` means the current one. Raises NoNetns when it cannot be opened."""
    if not name:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise NoNetns(e.errno, f"no network namespace {name}: {e.strerror}") from None
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            # Failing to come back would leave this thread in the pod for all later work.
            setns(own)
    finally:
        os.close(own)
