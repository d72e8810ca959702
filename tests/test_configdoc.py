"""config/README.md is the schema's rendering (mvmflow.configdoc): the two cannot drift."""

from __future__ import annotations

import copy
from pathlib import Path

from mvmflow.config import load_schema, schema_keys
from mvmflow.configdoc import render

ROOT = Path(__file__).parents[1]
SCHEMA = load_schema(ROOT / "config" / "schema.yaml")


def test_config_readme_is_the_schema_rendered():
    page = (ROOT / "config" / "README.md").read_text()
    assert page == render(SCHEMA), "config/README.md is stale: run `make config-doc`"


def test_every_key_is_documented_with_its_default():
    page = render(SCHEMA)
    for key in schema_keys(SCHEMA):
        assert f"| `{key}` |" in page, key
    assert '| `outdir` | a non-empty string | `"results"` |' in page
    assert "| `mosaic.enabled` | a boolean | `false` |" in page


def test_a_schema_change_changes_the_page():
    changed = copy.deepcopy(SCHEMA)
    changed["properties"]["tile_size"]["default"] = 2048
    assert render(changed) != render(SCHEMA)
    assert "| `tile_size` | an integer >= 64 | `2048` |" in render(changed)
