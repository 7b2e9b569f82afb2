"""Each role's defaults/main.yml (its API) and meta/argument_specs.yml agree, option by option."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p.parent.parent for p in (Path(__file__).parent.parent / "roles").glob("*/defaults/main.yml"))


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_document_every_default(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    required = sorted(name for name, option in options.items() if option.get("required"))
    assert sorted(defaults) == sorted(set(options) - set(required))  # a required option has no default
    assert all("default" not in options[name] for name in required)
    for name, value in defaults.items():
        assert options[name].get("default") == value, f"{role.name}: {name} default differs"
        assert options[name].get("description"), f"{role.name}: {name} has no description"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_variables_are_prefixed(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    assert all(name.startswith(f"{role.name}_") for name in defaults)
