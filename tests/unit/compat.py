# SPDX-License-Identifier: GPL-3.0-or-later
"""What the unit tests need from ansible-core that differs between the supported releases."""

from __future__ import annotations

import contextlib
import json
from unittest import mock

try:
    from ansible.module_utils.testing import patch_module_args  # ansible-core 2.19 and later
except ImportError:  # ansible-core 2.18: the module reads its arguments from basic._ANSIBLE_ARGS

    @contextlib.contextmanager
    def patch_module_args(args=None):
        """Run AnsibleModule with ``args`` as its module arguments (as 2.19's helper does)."""
        from ansible.module_utils import basic
        from ansible.module_utils.common.text.converters import to_bytes

        serialized = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}))
        with mock.patch.object(basic, "_ANSIBLE_ARGS", serialized):
            yield


try:
    from ansible.template import trust_as_template  # ansible-core 2.19 and later: data is untrusted by default
except ImportError:  # ansible-core 2.18 templates every string it is given

    def trust_as_template(value):
        """Mark ``value`` as a template (2.18 needs no mark)."""
        return value


__all__ = ["patch_module_args", "trust_as_template"]
