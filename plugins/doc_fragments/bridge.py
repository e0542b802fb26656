# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    """The node bridge that the pods' veths are attached to."""

    DOCUMENTATION = r"""
options:
  bridge:
    description: Name of the node bridge.
    type: str
    default: cni0
"""
