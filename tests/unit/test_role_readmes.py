# SPDX-License-Identifier: GPL-3.0-or-later
"""Every role has a README that Galaxy accepts and that names every variable of its argument spec.

galaxy-importer refuses a collection with a role that has no README.md; a README that misses
a variable of meta/argument_specs.yml is a README that drifted from the role.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES = sorted(
    name for name in os.listdir(os.path.join(ROOT, "roles")) if os.path.isdir(os.path.join(ROOT, "roles", name))
)


def _readme(role):
    path = os.path.join(ROOT, "roles", role, "README.md")
    assert os.path.isfile(path), "roles/%s has no README.md (galaxy-importer: 'No role readme found')" % role
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _options(role):
    with open(os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        specs = yaml.safe_load(handle)["argument_specs"]
    return sorted({name for entry in specs.values() for name in (entry.get("options") or {})})


def test_there_are_roles():
    assert "plan" in ROLES and len(ROLES) >= 8


@pytest.mark.parametrize("role", ROLES)
def test_readme_titles_the_role_and_links_its_spec(role):
    text = _readme(role)
    assert text.startswith("# flatnet.cluster.%s\n" % role)
    assert "](meta/argument_specs.yml)" in text


@pytest.mark.parametrize("role", ROLES)
def test_readme_names_every_variable(role):
    text = _readme(role)
    missing = [name for name in _options(role) if "`%s`" % name not in text]
    assert not missing, "roles/%s/README.md does not mention %s" % (role, ", ".join(missing))


@pytest.mark.parametrize("role", ROLES)
def test_readme_example_is_yaml_that_uses_the_role(role):
    blocks = re.findall(r"```yaml\n(.*?)```", _readme(role), re.S)
    assert blocks, "roles/%s/README.md has no ```yaml example" % role
    plays = yaml.safe_load(blocks[-1])
    assert isinstance(plays, list) and plays
    assert "flatnet.cluster.%s" % role in blocks[-1]
