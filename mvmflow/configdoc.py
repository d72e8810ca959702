"""``config/README.md``, generated from the config schema so the two cannot drift.

``config/schema.yaml`` is the one source of every key, type, default and description
(:mod:`mvmflow.config`). This module renders it as the page a user reads;
``tests/test_configdoc.py`` fails when the page in the repository differs from the schema's
rendering, and ``make config-doc`` (``python -m mvmflow.configdoc``) writes it again.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from mvmflow.config import BOOLEAN_WORDS, _describe, load_schema

__all__ = ["render", "main"]

_HEADER = """\
# Configuration

<!-- Generated from config/schema.yaml by `make config-doc`; do not edit by hand
     (tests/test_configdoc.py checks that this page matches the schema). -->

The workflow reads `config/config.yaml` (the defaults) and then any `--configfile FILE` and
`--config key=value` given to `snakemake`, later ones winning. Every key is checked at start
against `config/schema.yaml`: an unknown key, a wrong type or a value out of range stops the
run before any job, with one line naming the key, the value, what is allowed and where it was
set. Booleans accept true/false, yes/no, on/off and 1/0 in any case; the environment variables
`MVM_INCLUDE_SMALL`, `MVM_ONLY_CTE` and `MVM_QUALITY_TESTING` override their keys, as in the
reference, and `MVMFLOW_MAST_URL` overrides `archive.mast_url`.

Keys are listed in the schema's order; nested keys by their dotted path (`mosaic.enabled` is
`mosaic: {enabled: ...}` in YAML).

| key | accepts | default | meaning |
|---|---|---|---|
"""


def _text(value: str) -> str:
    """One table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _default(schema: Mapping, required: bool) -> str:
    if "default" not in schema:
        return "(required)" if required else "(none)"
    value = schema["default"]
    if value == {} and schema.get("properties"):
        return "(see below)"
    return "`" + json.dumps(value) + "`"


def _rows(schema: Mapping, prefix: str = ""):
    required = set(schema.get("required", ()))
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        meaning = sub.get("description", "")
        if key in required and "default" not in sub:
            meaning = "Required. " + meaning
        accepts = _describe(sub).replace(f"a boolean ({BOOLEAN_WORDS}, any case)", "a boolean")
        if isinstance(sub.get("additionalProperties"), Mapping) and not sub.get("properties"):
            accepts += f" of {_describe(sub['additionalProperties'])}"
        if "propertyNames" in sub and "enum" in sub["propertyNames"]:
            accepts += " with keys " + ", ".join(sub["propertyNames"]["enum"])
        yield f"| `{path}` | {_text(accepts)} | {_text(_default(sub, key in required))} | {_text(meaning)} |\n"
        yield from _rows(sub, path + ".")
        items = sub.get("items")
        if isinstance(items, Mapping) and items.get("properties"):
            yield from _rows(items, path + "[].")


def render(schema: Mapping) -> str:
    """The text of ``config/README.md`` for ``schema`` (the loaded ``config/schema.yaml``)."""
    return _HEADER + "".join(_rows(schema))


def main(argv: list[str] | None = None) -> int:
    """Write ``config/README.md`` beside the schema given (default: the repository's)."""
    from mvmflow.workflow import atomic_path

    argv = sys.argv[1:] if argv is None else argv
    schema_path = Path(argv[0]) if argv else Path(__file__).parents[1] / "config" / "schema.yaml"
    target = schema_path.parent / "README.md"
    with atomic_path(target) as tmp:
        Path(tmp).write_text(render(load_schema(schema_path)))
    print(f"wrote {os.fspath(target)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
