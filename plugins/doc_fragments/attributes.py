# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    """Check mode and diff mode of the collection's modules, as community.general's
    ``attributes`` fragment: the fragment gives the support, a module that names it says in its
    own ``attributes`` what check mode reports and what the diff shows (its description wins)."""

    # A module that changes the node and shows the change with --diff.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    support: full
    description: Can run in check mode and return changed status prediction without modifying the target.
  diff_mode:
    support: full
    description: Returns details on what has changed (or would change in check mode) when in diff mode.
"""

    # A module that changes things but has no before and after to show.
    NO_DIFF = r"""
options: {}
attributes:
  check_mode:
    support: full
    description: Reports what would be done, without doing it.
  diff_mode:
    support: none
    description: Nothing to show as a diff.
"""

    # A module that only reads, as community.general's attributes.info_module.
    READ_ONLY = r"""
options: {}
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: N/A
    description: Nothing changes, so there is no diff.
"""

    # An action plugin that does all its work on the controller (with one of the above).
    CONTROLLER = r"""
options: {}
attributes:
  action:
    support: full
    description: Runs on the controller only.
"""
