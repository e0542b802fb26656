# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a M(flatnet.cluster.lab) owns: its marker ``<state_dir>/<name>/lab.json`` and the
named network namespaces recorded there.

The lab owns what its record says it made, never what merely carries its name: a directory
without the marker, or a namespace the marker does not record, is refused (LabError) before
anything is changed.
"""

from __future__ import annotations

import json
import os

from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import netns_inode
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_identity import boot_id, write_private
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_spec import LabError

# The lab's own record in <state_dir>/<name>: which lab made the directory, and which named
# namespaces (dev, inode, boot id) it made. Written before anything else is created.
MARKER = "lab.json"
MADE_BY = "flatnet.cluster.lab"
PENDING = "pending"


class LabOwnership:
    """The marker and namespace checks of the module's Lab (it uses its ``lab_dir``,
    ``name``, ``marker``, ``netns``, ``outns`` and ``ipr``)."""

    def marker_path(self):
        return os.path.join(self.lab_dir, MARKER)

    def foreign_dir(self, why):
        return LabError(
            f"{self.lab_dir} {why}: lab {self.name} did not make it, so it neither uses nor deletes it. "
            f"Pick another flatnet_lab_name (or flatnet_lab_state_dir), or remove {self.lab_dir} if it is a leftover"
        )

    def read_marker(self):
        """The lab's marker, or None when there is no lab dir or an empty one (a create that
        died before writing it). LabError for a directory the lab did not make."""
        if os.path.islink(self.lab_dir) or (os.path.lexists(self.lab_dir) and not os.path.isdir(self.lab_dir)):
            raise self.foreign_dir("is not a directory")
        if not os.path.isdir(self.lab_dir):
            return None
        path = self.marker_path()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            if not os.listdir(self.lab_dir):
                return None
            raise self.foreign_dir(f"exists and holds no marker {MARKER}")
        except OSError as e:
            raise self.foreign_dir(f"has an unreadable marker {path} ({e})")
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(1 << 20)
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise self.foreign_dir(f"has a marker {path} that is not root-only")
        try:
            marker = json.loads(data)
        except ValueError:
            raise self.foreign_dir(f"has a corrupt marker {path}")
        if not isinstance(marker, dict) or marker.get("made_by") != MADE_BY or marker.get("lab") != self.name:
            other = marker.get("lab") if isinstance(marker, dict) else None
            raise self.foreign_dir(f"has a marker {path} that is not lab {self.name}'s (lab {other!r})")
        if not isinstance(marker.get("netns"), dict):
            marker["netns"] = {}
        return marker

    def save_marker(self):
        if self.marker is None:
            self.marker = {"lab": self.name, "made_by": MADE_BY, "netns": {}}
        os.makedirs(self.lab_dir, mode=0o700, exist_ok=True)
        write_private(self.marker_path(), json.dumps(self.marker, sort_keys=True) + "\n")

    @staticmethod
    def netns_id(name):
        """[dev, inode, boot id] of a live named netns, or None."""
        if netns_inode(name) is None:
            return None
        try:
            st = os.stat(os.path.join("/run/netns", name))
        except OSError:
            return None
        return [st.st_dev, st.st_ino, boot_id()]

    def check_netns(self, ns):
        """True when the named netns exists and this lab made it, False when there is none;
        LabError (before anything is changed) when it exists and the lab did not make it."""
        cur = self.netns_id(ns)
        if cur is None:
            return False
        rec = (self.marker or {}).get("netns", {}).get(ns)
        if rec == cur:
            return True
        # Made by a create that died between "ip netns add" and recording it: ours if it
        # still holds nothing but lo.
        if rec == PENDING and set(self.ipr.links(ns)) <= {"lo"}:
            return True
        why = "its recorded inode differs" if rec else f"{self.marker_path()} does not record it"
        raise LabError(
            f"network namespace {ns} exists but lab {self.name} did not make it ({why}), so it neither uses "
            f"nor deletes it. Pick another flatnet_lab_name, or delete it (ip netns del {ns}) if it is a leftover"
        )

    def forget_netns(self, ns):
        if self.marker is not None and ns in self.marker["netns"]:
            del self.marker["netns"][ns]
            self.save_marker()

    def check_ownership(self):
        self.marker = self.read_marker()
        for ns in (self.netns, self.outns):
            self.check_netns(ns)
