"""Every configuration key, wrong: the run stops at start with one line naming the key.

The corpus is generated from ``config/schema.yaml`` (issue 17, "Configuration"): for every key
of the schema - top-level, nested, the items of the lists of mappings (``cutouts[0].ra``,
``psf[0].detector``) and the named keys of free mappings (``cosmic_rays.acs_wfc``) - a value
of a wrong type, a wrong value for every constraint the schema states (an enum, a minimum, a
maximum, a pattern, a length) and a misspelling of the key. The mappings the schema leaves
open are covered too: a misspelling of every key of ``align.params`` (AlignParams,
FitCriteria), ``align.catalogs`` (CatalogParams) and ``detectors`` (the detectors, parameter
sets and set keys of ``config/detectors.yaml``). Each case must give exactly one line,
``Config error: ...``, naming the key by its full dotted path and what is allowed (the type,
the choices, the bounds, or the key meant), and no traceback. The library check
(:func:`mvmflow.config.check_config`) is tried on every case; a handful also go through
``snakemake -n`` to show the run stops at start, before any job.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml
from wfrun import run_snakemake

from mvmflow.config import ConfigError, check_config, load_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "config" / "schema.yaml"
SCHEMA = load_schema(SCHEMA_FILE)
DEFAULT_FILE = ROOT / "config" / "config.yaml"
DEFAULT = yaml.safe_load(DEFAULT_FILE.read_text())

#: A valid item of each list of mappings, to hold the key under test.
ITEMS = {
    "cutouts": {"ra": 10.0, "dec": -5.0, "size": 3.0},
    "psf": {"detector": "UVIS", "suffix": "flt"},
    "skycells": "skycell-p0081x14y14",
}

#: One value of each JSON type (a boolean key's wrong value must not be a switch word).
SAMPLES = {
    "integer": 7,
    "number": 3.5,
    "string": "zzz",
    "array": [1, 2, 3],
    "object": {"zzz": 1},
    "boolean": True,
    "null": None,
}

#: The words of ``mvmflow.config._describe`` for each type, looked for in the message.
TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "array": "a list",
    "object": "a mapping",
    "boolean": "a boolean",
    "null": "null",
}


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of the schema: its path (list indices as ints) and its (sub)schema."""

    path: tuple
    schema: dict

    @property
    def dotted(self) -> str:
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text


@dataclasses.dataclass(frozen=True)
class Case:
    """One wrong config: ``value`` at ``key.path`` (or ``misspelled`` instead of the key)."""

    kind: str  # "type", "value" or "misspelling"
    key: Key
    value: object = None
    misspelled: str | None = None
    expect: tuple = ()  # texts the message must contain, besides the key

    @property
    def id(self) -> str:
        return f"{self.key.dotted}-{self.kind}-{self.misspelled or repr(self.value)}"


def _branches(schema: dict) -> list[dict]:
    return list(schema.get("anyOf", schema.get("oneOf", []))) or [schema]


def _types(schema: dict) -> set[str]:
    kinds = set()
    for branch in _branches(schema):
        kind = branch.get("type", ())
        kinds |= {kind} if isinstance(kind, str) else set(kind)
        if "enum" in branch and not kind:
            kinds |= {"string"}
    return kinds


def schema_keys(schema: dict, path: tuple = ()) -> list[Key]:
    """Every key of the schema, depth first: named properties, the properties of list items
    (at index 0) and the names a free mapping allows (``propertyNames``)."""
    keys = []
    for name, sub in schema.get("properties", {}).items():
        keys.append(Key(path + (name,), sub))
        keys += schema_keys(sub, path + (name,))
        items = sub.get("items")
        if sub.get("type") == "array" and isinstance(items, dict) and "properties" in items:
            keys += schema_keys(items, path + (name, 0))
    names = schema.get("propertyNames", {}).get("enum", [])
    extra = schema.get("additionalProperties")
    for name in names if isinstance(extra, dict) else ():
        keys.append(Key(path + (name,), extra))
    return keys


def _wrong_type(key: Key) -> Case | None:
    accepted = _types(key.schema)
    if not accepted:
        return None
    for kind, value in SAMPLES.items():
        if kind in accepted or (kind == "integer" and "number" in accepted):
            continue
        if kind == "boolean" and ({"integer", "number"} & accepted):
            continue  # a bool is no number to jsonschema, but keep the case unambiguous
        return Case("type", key, value, expect=_allowed_words(key.schema))
    return None


def _allowed_words(schema: dict) -> tuple:
    """What the message must list as allowed: every choice of an enum, else the type."""
    words = []
    for branch in _branches(schema):
        if "enum" in branch:
            words += [repr(v) for v in branch["enum"]]
            continue
        kind = branch.get("type", ())
        for k in [kind] if isinstance(kind, str) else kind:
            words.append("string" if k == "string" else TYPE_WORDS[k])
    return tuple(words)


def _wrong_values(key: Key) -> list[Case]:
    """A value of the right type breaking each constraint of each branch of the schema."""
    cases = []
    for branch in _branches(key.schema):
        if "enum" in branch:
            word = str(branch["enum"][0])
            cases.append(Case("value", key, word + "x",
                              expect=tuple(repr(v) for v in branch["enum"])))
        integer = branch.get("type") == "integer"
        step = 1 if integer else 0.5
        if "minimum" in branch:
            cases.append(Case("value", key, branch["minimum"] - step,
                              expect=(str(branch["minimum"]),)))
        if "maximum" in branch:
            cases.append(Case("value", key, branch["maximum"] + step,
                              expect=(str(branch["maximum"]),)))
        if "exclusiveMinimum" in branch:
            cases.append(Case("value", key, branch["exclusiveMinimum"],
                              expect=(f"> {branch['exclusiveMinimum']}",)))
        if "pattern" in branch:
            cases.append(Case("value", key, "not a match!", expect=(branch["pattern"],)))
        if branch.get("minLength"):
            cases.append(Case("value", key, "", expect=("non-empty",)))
        if branch.get("type") == "array":
            items = branch.get("items", {})
            if "minItems" in branch and "maxItems" in branch:
                n = branch["maxItems"]
                good = _good_scalar(items)
                cases.append(Case("value", key, [good] * (n + 1), expect=(f"a list of {n}",)))
            if items and "exclusiveMinimum" in items:
                good = [_good_scalar(items)] * branch.get("minItems", 1)
                cases.append(Case("value", key, [items["exclusiveMinimum"]] + good[1:],
                                  expect=(f"> {items['exclusiveMinimum']}",)))
            elif items and "minimum" in items:
                good = [_good_scalar(items)] * branch.get("minItems", 1)
                cases.append(Case("value", key, [items["minimum"] - 1] + good[1:],
                                  expect=(f">= {items['minimum']}",)))
    return cases


def _good_scalar(schema: dict):
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("type") == "integer":
        return max(schema.get("minimum", 1), 1)
    if schema.get("type") == "number":
        return 1.0 + schema.get("exclusiveMinimum", schema.get("minimum", 0))
    return "x"


def _misspell(name: str) -> str:
    """A plausible typo: two letters swapped (a letter doubled for short names)."""
    if len(name) < 4:
        return name + name[-1]
    i = next(i for i in range(1, len(name) - 1) if name[i] != name[i + 1])
    return name[:i] + name[i + 1] + name[i] + name[i + 2:]


def all_cases(schema: dict = SCHEMA) -> list[Case]:
    cases = []
    for key in schema_keys(schema):
        wrong = _wrong_type(key)
        cases += [wrong] if wrong else []
        cases += _wrong_values(key)
        cases.append(Case("misspelling", key, misspelled=_misspell(str(key.path[-1])),
                          expect=(f"did you mean {key.dotted!r}",)))
    return cases


def free_keys() -> list[Key]:
    """The keys of the mappings the schema leaves open, checked at start by
    :func:`mvmflow.config.check_config`: the alignment and source-finding parameters and the
    per-detector drizzle overrides (``config/detectors.yaml``)."""
    from mvmflow.align import AlignParams
    from mvmflow.catalogs import CatalogParams
    from mvmflow.fitting import FitCriteria

    keys = [Key(("align", "params", f.name), {}) for f in dataclasses.fields(AlignParams)
            if f.name != "criteria"]
    keys += [Key(("align", "params", f.name), {}) for f in dataclasses.fields(FitCriteria)]
    keys += [Key(("align", "catalogs", f.name), {}) for f in dataclasses.fields(CatalogParams)]
    table = yaml.safe_load((ROOT / "config" / "detectors.yaml").read_text())["detectors"]
    for det, sets in table.items():
        keys.append(Key(("detectors", det), {}))
        for name in sets:
            if name != "scales":
                keys.append(Key(("detectors", det, name), {}))
    det, name = "acs_wfc", "n2"
    keys += [Key(("detectors", det, name, k), {}) for k in table[det][name]]
    return keys


def free_cases() -> list[Case]:
    return [Case("misspelling", key, misspelled=_misspell(key.path[-1]),
                 expect=(f"did you mean {key.dotted!r}",)) for key in free_keys()]


def _item_cases() -> list[Case]:
    """List items breaking the schema of ``items`` (``skycells``: the sky-cell pattern)."""
    key = Key(("skycells", 0), SCHEMA["properties"]["skycells"]["items"])
    return [Case("value", key, "skycell-p81x1y1", expect=(key.schema["pattern"],)),
            Case("type", key, 81, expect=("a string",))]


CASES = all_cases() + _item_cases() + free_cases()


# -- building the wrong config -----------------------------------------------------------------


def _container(config: dict, path: tuple) -> dict:
    """The mapping that holds the last part of ``path`` (made on the way, lists with a valid
    item)."""
    node = config
    for n, part in enumerate(path[:-1]):
        if isinstance(part, int):
            node = node[part]
            continue
        following = path[n + 1]
        if isinstance(following, int):
            if not node.get(part):
                node[part] = [copy.deepcopy(ITEMS[part])]
        elif not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    return node


def wrong_config(case: Case) -> tuple[dict, dict]:
    """The merged config of ``case`` and the --config overrides that made it."""
    config = copy.deepcopy(DEFAULT)
    override: dict = {}
    for target in (config, override):
        node = _container(target, case.key.path)
        last = case.key.path[-1]
        if case.kind == "misspelling":
            in_list = any(isinstance(p, int) for p in case.key.path)
            if not case.key.schema:  # a key of a free mapping
                depth = len(case.key.path) if case.key.path[0] == "detectors" else 0
                value = {2: {"n2": {}}, 3: {}}.get(depth, 1)
            else:
                value = node.get(last, _good_scalar(case.key.schema))
            if in_list:
                node.pop(last, None)  # the user wrote the item: the key is the typo only
            node[case.misspelled] = value
        else:
            node[last] = case.value
    return config, override


def check_case(case: Case) -> str:
    """The message of ``case``; asserts the one-line, named, no-traceback contract."""
    config, override = wrong_config(case)
    with pytest.raises(ConfigError) as info:
        check_config(config, copy.deepcopy(SCHEMA), default_file=DEFAULT_FILE,
                     overrides=override, detectors_file=ROOT / "config" / "detectors.yaml")
    message = str(info.value)
    lines = message.splitlines()
    assert len(lines) == 1, message
    assert lines[0].startswith("Config error: "), message
    assert "Traceback" not in message
    named = case.key.dotted
    if case.kind == "misspelling":
        named = Key(case.key.path[:-1] + (case.misspelled,), {}).dotted
    assert repr(named) in message, (named, message)
    for text in case.expect:
        assert text in message, (text, message)
    assert "set on the --config command line" in message, message
    return message


# -- the library: every key ---------------------------------------------------------------------


def test_the_corpus_covers_every_key_of_the_schema():
    keys = {c.key.dotted for c in CASES}
    # named keys at every depth, list items, the named keys of free mappings, and the keys
    # of the mappings the schema leaves open
    for dotted in ("inputs", "demo.seed", "mosaic.projection_cell", "cutouts[0].size",
                   "psf[0].workers", "archive.timeout", "cosmic_rays.acs_sbc",
                   "products.previews", "align.mixed_frames", "skycells[0]",
                   "align.params.fitgeom", "align.params.max_rms_mas", "align.catalogs.nsigma",
                   "detectors.wfc3_ir", "detectors.acs_wfc.n1", "detectors.acs_wfc.n2.pixfrac"):
        assert dotted in keys, dotted
    assert {k.dotted for k in schema_keys(SCHEMA)} <= keys
    named = {c.key.dotted for c in CASES if isinstance(c.key.path[-1], str)}
    kinds = {kind: sum(c.kind == kind for c in CASES) for kind in ("type", "value",
                                                                    "misspelling")}
    assert kinds["misspelling"] == len(named) >= 120
    assert kinds["type"] >= len(schema_keys(SCHEMA))
    assert kinds["value"] >= 40


def test_demo_presets_of_the_schema_are_the_simulators():
    """demo.preset is an enum of the schema (the pipeline may not import the simulator to
    check it at start): it must list exactly the simulator's presets."""
    from mvmflow.simulate import PRESETS

    assert SCHEMA["properties"]["demo"]["properties"]["preset"]["enum"] == sorted(PRESETS)


def test_every_key_wrong_type_value_and_misspelling_is_one_line_naming_it(reliability_row):
    failures = []
    for case in CASES:
        try:
            check_case(case)
        except (AssertionError, pytest.fail.Exception) as error:
            failures.append(f"{case.id}: {error}")
        except Exception as error:  # noqa: BLE001 - a crash is the worst failure
            failures.append(f"{case.id}: crashed with {type(error).__name__}: {error}")
    keys = len({c.key.dotted for c in CASES})
    print(f"config corpus: {keys} keys, {len(CASES)} cases, {len(failures)} failures")
    assert not failures, "\n".join(failures)
    kinds = {k: sum(c.kind == k for c in CASES) for k in ("type", "value", "misspelling")}
    reliability_row("configuration: every key wrong or misspelled",
                    "the run stops at start, one line naming the key and the allowed values",
                    f"{keys} keys, {len(CASES)} cases ({kinds['type']} wrong type, "
                    f"{kinds['value']} wrong value, {kinds['misspelling']} misspelled): one "
                    "line each, no traceback (6 of them through snakemake -n)")


# -- the workflow: a handful of keys through snakemake -n ---------------------------------------


def _pick(dotted: str, kind: str) -> Case:
    return next(c for c in CASES if c.key.dotted == dotted and c.kind == kind)


DRY_RUN_CASES = [
    _pick("tile_size", "type"),
    _pick("mosaic.scale", "value"),
    _pick("cutouts[0].ra", "value"),
    _pick("psf[0].size", "misspelling"),
    _pick("align.params.fitgeom", "misspelling"),
    _pick("detectors.acs_wfc.n2.pixfrac", "misspelling"),
]


@pytest.mark.parametrize("case", DRY_RUN_CASES, ids=lambda c: c.id)
def test_snakemake_stops_at_start_with_one_line(case, tmp_path):
    config, _ = wrong_config(case)
    out = run_snakemake(tmp_path, config, "-n", check=False)
    output = out.stdout + out.stderr
    assert out.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Config error: ")]
    assert len(errors) == 1, output
    # the message names the key and what is allowed, set in the test's config file
    lib = check_case(case).replace("set on the --config command line",
                                   f"set in the config file {tmp_path / 'test_config.yaml'} "
                                   "(--configfile)")
    assert errors[0] == lib, output
    assert not (tmp_path / "results").exists()  # nothing made: stopped at start
