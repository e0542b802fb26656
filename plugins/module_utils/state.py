# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What flatnet.cluster records on a node, under /var/lib/flatnet, as small JSON files.

The records are what make pruning and teardown safe (only what is recorded is ours) and
what lets the planner keep every node's addresses stable when the controller lost its cache.
"""

from __future__ import annotations

import json
import os
import tempfile

STATE_DIR = "/var/lib/flatnet"


def state_dir_spec():
    """Argument spec of the ``state_dir`` option (documented by the ``flatnet.cluster.state_dir`` fragment)."""
    return {"type": "path", "default": STATE_DIR}


def load(path, default=None):
    """Decoded JSON of ``path``; ``default`` (an empty dict) when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {} if default is None else default
    return data


def save(path, data):
    """Write JSON atomically, so an interrupted run never leaves half a record."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_atomic(path, text):
    """Write ``text`` to ``path`` through a temp file and a rename; True when the content changed.

    Also used on the controller (the plan file, verification reports).
    """
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except (OSError, UnicodeDecodeError):
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".flatnet-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_dir_if_empty(path):
    try:
        os.rmdir(path)
    except OSError:
        pass
