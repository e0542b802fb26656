# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    """The records every node module keeps under /var/lib/flatnet."""

    DOCUMENTATION = r"""
options:
  state_dir:
    description:
      - Directory of the state files in which the collection records what it made on the node.
      - Only tests change it.
    type: path
    default: /var/lib/flatnet
"""
