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


class StateError(Exception):
    """A record that exists but cannot be used: the message names the file and the fix."""


FIX = ("move it away (the next run rebuilds what it can from the kernel), or run the "
       "teardown playbook to remove what flatnet.cluster made on this node")


def load(path, default=None):
    """The record in ``path`` (a JSON object); ``default`` (an empty dict) when it is missing.

    A record that exists but cannot be read, is not JSON or is not a JSON object raises
    :class:`StateError`: the records are what make pruning and teardown safe, so guessing
    "empty" would let a run forget what it owns (or claim what it does not).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {} if default is None else default
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"state file {path} cannot be read ({exc}): {FIX}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(f"state file {path} is corrupt (not JSON: {exc}): {FIX}") from None
    if not isinstance(data, dict):
        raise StateError(f"state file {path} is corrupt (a JSON {type(data).__name__}, "
                         f"not an object): {FIX}")
    return data


def load_or_fail(module, path):
    """:func:`load` for a module: a corrupt record fails the task (``fail_json``) before any change."""
    try:
        return load(path)
    except StateError as exc:
        module.fail_json(msg=str(exc))
    return {}  # not reached: fail_json exits


def save(path, data):
    """Write JSON atomically, so an interrupted run never leaves half a record."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_text(path):
    """The text of a file the collection writes (a config, an agent): None when it is
    missing, "" when it exists but cannot be read (never ours as it is: it is rewritten)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""


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
            # The data must be on disk before the rename makes it the record; otherwise a
            # crash can leave a renamed but empty file.
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)
    return True


def fsync_dir(directory):
    """Make a rename or unlink in ``directory`` durable (best effort where a filesystem refuses)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def remove_dir_if_empty(path):
    try:
        os.rmdir(path)
    except OSError:
        pass
