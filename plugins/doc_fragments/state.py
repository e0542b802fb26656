# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    """The O(state) of a module that makes something on the node and can take it away again.
    A module says in its own ``state`` description what both values do there (it wins)."""

    DOCUMENTATION = r"""
options:
  state:
    description: V(present) makes what the module is asked for; V(absent) removes what it made.
    type: str
    choices: [present, absent]
    default: present
"""
