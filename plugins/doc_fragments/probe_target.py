# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    """One address of one pod of the cluster, a probe's destination: the suboptions of the
    probe module's O(targets) and O(mtu_targets) (module_utils/probe_client.py TARGET_OPTIONS).
    The module documents the options themselves."""

    DOCUMENTATION = r"""
options:
  targets:
    suboptions: &target
      node:
        description: Node of the pod.
        type: str
        required: true
      pod:
        description: Pod name.
        type: str
        required: true
      ip:
        description: One address of the pod, without prefix.
        type: str
        required: true
  mtu_targets:
    suboptions: *target
"""
