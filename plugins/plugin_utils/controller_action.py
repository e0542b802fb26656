# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape of an action plugin that does all its work on the controller.

No connection to the managed host, nothing to transfer: ``run`` validates the task's arguments
against the plugin's ``ARGUMENT_SPEC`` and hands them to ``run_on_controller``. The work itself
stays in the pure functions of plugin_utils; this is the only Ansible object here.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase


class ControllerAction(ActionBase):
    """Base of the controller-only action plugins; a subclass sets ``ARGUMENT_SPEC`` and
    writes ``run_on_controller(result, args, task_vars)``, which returns the task result."""

    TRANSFERS_FILES = False
    _requires_connection = False
    ARGUMENT_SPEC: dict = {}

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)
        return self.run_on_controller(result, args, task_vars or {})

    def run_on_controller(self, result, args, task_vars):
        raise NotImplementedError
