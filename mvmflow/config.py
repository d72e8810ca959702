"""The workflow config: checked once, at start, with short messages.

``config/schema.yaml`` is the single source of truth for the keys, their types and their
defaults. :func:`check_config` replaces snakemake's ``validate``: it

1. turns the switch words of :mod:`mvmflow.switches` (``on/off``, ``yes/no``,
   ``true/false``, ``1/0``, any case) into real booleans for every boolean key of the
   schema, at any depth (``--config quality_testing=true`` gives the string ``'true'``);
2. fills in the schema defaults (as ``validate(..., set_default=True)``) and validates;
3. checks the keys of the mappings the schema leaves open (``align.params``,
   ``align.catalogs``, ``detectors``) against the parameters they set, so a typo there
   stops the run at start rather than failing a job later;
4. checks the ``inputs`` value (:func:`mvmflow.inputs.check_inputs`).

Any problem is a :class:`ConfigError` whose message has one line per problem, naming the key
(dotted path, e.g. ``mosaic.enabeld``), the bad value, what is expected, where the key was
set (the ``--config`` command line, a ``--configfile`` or the default config file) and, for
an unknown key or value, the closest valid one. This module never imports snakemake: the
Snakefile passes what it knows about the config's sources.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import jsonschema
import yaml

from mvmflow.inputs import check_inputs
from mvmflow.switches import FALSE_WORDS, TRUE_WORDS, parse_switch

__all__ = [
    "ConfigError",
    "boolean_keys",
    "check_config",
    "coerce_booleans",
    "config_sources",
    "load_schema",
    "schema_keys",
    "validate_config",
]

MAX_PROBLEMS = 5
"""At most this many problems are listed in one :class:`ConfigError`."""

BOOLEAN_WORDS = ", ".join(f"{t}/{f}" for t, f in zip(TRUE_WORDS, FALSE_WORDS, strict=True))


class ConfigError(ValueError):
    """A bad workflow config; the message is short and meant for the user as it is."""


def load_schema(path: str | os.PathLike) -> dict:
    """Read the config schema (YAML or JSON)."""
    with open(path) as f:
        return yaml.safe_load(f)


def _types(schema: Mapping) -> tuple[str, ...]:
    kind = schema.get("type", ())
    return (kind,) if isinstance(kind, str) else tuple(kind)


def _walk_keys(schema: Mapping, prefix: tuple = ()):
    for key, sub in schema.get("properties", {}).items():
        yield prefix + (key,), sub
        yield from _walk_keys(sub, prefix + (key,))


def schema_keys(schema: Mapping) -> list[str]:
    """Dotted paths of every named key of the schema (``mosaic.enabled``), in schema order."""
    return [".".join(path) for path, _ in _walk_keys(schema)]


def boolean_keys(schema: Mapping) -> list[str]:
    """Dotted paths of the schema's boolean keys (``quality_testing``, ``mosaic.enabled``)."""
    return [".".join(path) for path, sub in _walk_keys(schema) if "boolean" in _types(sub)]


def coerce_booleans(value, schema: Mapping):
    """Turn switch words into booleans wherever the schema expects a boolean.

    Parameters
    ----------
    value : object
        A config (or part of one); mappings and lists are updated in place.
    schema : Mapping
        The (sub)schema of ``value``; ``properties``, ``additionalProperties`` and ``items``
        are followed.

    Returns
    -------
    object
        ``value`` with every boolean-typed entry that :func:`mvmflow.switches.parse_switch`
        accepts replaced by its bool; other values are left for the validation to report.
    """
    if "boolean" in _types(schema) and not isinstance(value, bool):
        try:
            return parse_switch(value, "config")
        except ValueError:
            return value
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                value[key] = coerce_booleans(item, sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for n, item in enumerate(value):
            value[n] = coerce_booleans(item, schema["items"])
    return value


def config_sources(default_file: str | os.PathLike | None = None,
                   configfiles: Sequence[str | os.PathLike] = (),
                   overrides: Mapping | None = None) -> list[tuple[str, Mapping]]:
    """Where the config came from, lowest precedence first, as snakemake merges them.

    Parameters
    ----------
    default_file : path, optional
        The workflow's ``configfile:`` (``config/config.yaml``).
    configfiles : sequence of paths
        The ``--configfile`` files, in command-line order (later ones win).
    overrides : Mapping, optional
        The ``--config`` key=value pairs (they win over every file).

    Returns
    -------
    list of (str, Mapping)
        ``(label, data)`` pairs; the label completes "set ...", e.g. ``on the --config
        command line``. A file that cannot be read gives an empty mapping.
    """
    sources = []
    files = [(default_file, "in the default config file {}")] if default_file else []
    files += [(f, "in the config file {} (--configfile)") for f in configfiles]
    for path, label in files:
        try:
            data = load_schema(path) or {}
        except (OSError, yaml.YAMLError):
            data = {}
        sources.append((label.format(path), data if isinstance(data, Mapping) else {}))
    if overrides:
        sources.append(("on the --config command line", overrides))
    return sources


def _has(data, path: Sequence) -> bool:
    for part in path:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return False
    return True


def _source(path: Sequence, sources: Sequence[tuple[str, Mapping]]) -> str:
    """The label of the last source that sets ``path`` (or its deepest set parent)."""
    for depth in range(len(path), 0, -1):
        for label, data in reversed(sources):
            if _has(data, path[:depth]):
                return label
    return "by the schema default"


def _dotted(path: Sequence) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(schema: Mapping, noun: str) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"{noun} from {low} to {high}"
    parts = [f">= {low}" if low is not None else "", f"> {schema.get('exclusiveMinimum')}"
             if "exclusiveMinimum" in schema else "", f"<= {high}" if high is not None else ""]
    return " ".join([noun] + [p for p in parts if p])


def _describe(schema: Mapping) -> str:
    """What a (sub)schema accepts, in a few words."""
    if "anyOf" in schema or "oneOf" in schema:
        return " or ".join(_describe(s) for s in schema.get("anyOf", schema.get("oneOf")))
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    words = []
    for kind in _types(schema) or ("any value",):
        if kind == "boolean":
            words.append(f"a boolean ({BOOLEAN_WORDS}, any case)")
        elif kind in ("integer", "number"):
            words.append(_number(schema, "an integer" if kind == "integer" else "a number"))
        elif kind == "string":
            text = "a non-empty string" if schema.get("minLength") else "a string"
            words.append(text + (f" matching {schema['pattern']}" if "pattern" in schema else ""))
        elif kind == "array":
            n, m = schema.get("minItems"), schema.get("maxItems")
            text = f"a list of {n}" if n is not None and n == m else "a list"
            items = schema.get("items")
            words.append(text + (f" (items: {_describe(items)})" if items else ""))
        elif kind == "object":
            words.append("a mapping")
        elif kind == "null":
            words.append("null")
        else:
            words.append(kind)
    return " or ".join(words)


def _suggest(word: str, choices: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_key(path: tuple, valid: Sequence[str], schema: Mapping, where: str) -> str:
    key = str(path[-1])
    near = _suggest(key, valid)
    if near is not None:
        hint = f"did you mean {_dotted(path[:-1] + (near,))!r}?"
    else:
        # the key may belong at another level (--config tile_size=1024: mosaic.tile_size)
        elsewhere = [k for k in schema_keys(schema)
                     if difflib.SequenceMatcher(None, key, k.rsplit(".", 1)[-1]).ratio() >= 0.8
                     and k != _dotted(path)]
        if elsewhere:
            hint = "did you mean " + " or ".join(repr(k) for k in elsewhere[:3]) + "?"
        else:
            hint = "valid keys here: " + ", ".join(valid)
    return f"unknown key {_dotted(path)!r} set {where}; {hint}"


def _messages(error: jsonschema.ValidationError, schema: Mapping,
              sources: Sequence[tuple[str, Mapping]]) -> list[str]:
    """One line per problem of a jsonschema error."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        valid = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in valid]
        return [_unknown_key(path + (k,), valid, schema, _source(path + (k,), sources))
                for k in extra]
    if "propertyNames" in error.absolute_schema_path:
        key = path + (error.instance,)
        return [_unknown_key(key, list(error.schema.get("enum", [])), schema,
                             _source(key, sources))]
    if error.validator == "required":
        props = error.schema.get("properties", {})
        # a required key written with a typo is one problem, the unknown key's line says it
        typos = {_suggest(k, list(props)) for k in error.instance if k not in props}
        missing = [k for k in error.validator_value if k not in error.instance
                   and k not in typos]
        where = f"in {_dotted(path)!r}" if path else "in the config"
        return [f"missing required key {k!r} {where} set {_source(path, sources)}; "
                f"expected {_describe(props.get(k, {}))}" for k in missing]
    line = (f"bad value {_short(error.instance)} for {_dotted(path)!r} set "
            f"{_source(path, sources)}; expected {_describe(error.schema)}")
    if error.validator == "enum" and isinstance(error.instance, str):
        near = _suggest(error.instance, error.validator_value)
        if near is not None:
            line += f"; did you mean {near!r}?"
    return [line]


def _default_setting_validator(schema: Mapping):
    """A validator class that fills in ``default``s, as snakemake's ``validate``."""
    base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    check_properties = base.VALIDATORS["properties"]

    def properties(validator, props, instance, subschema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, props, instance, subschema)

    return jsonschema.validators.extend(base, {"properties": properties})


def _raise(lines: list[str]) -> None:
    text = "\n".join(f"Config error: {line}" for line in lines[:MAX_PROBLEMS])
    if len(lines) > MAX_PROBLEMS:
        text += f"\n... and {len(lines) - MAX_PROBLEMS} more"
    raise ConfigError(text)


def validate_config(config: dict, schema: Mapping,
                    sources: Sequence[tuple[str, Mapping]] = ()) -> None:
    """Coerce the booleans, fill in the defaults and validate ``config``, in place.

    Parameters
    ----------
    config : dict
        The merged config (updated in place).
    schema : Mapping
        The config schema.
    sources : sequence of (str, Mapping)
        Where the config came from (:func:`config_sources`), to say where a bad key was set.

    Raises
    ------
    ConfigError
        One line per problem (at most :data:`MAX_PROBLEMS`), each naming the key, the value,
        what is expected, where it was set and, for a misspelling, the closest valid choice.
    """
    coerce_booleans(config, schema)
    validator = _default_setting_validator(schema)(schema)
    lines = []
    for error in validator.iter_errors(config):
        lines += [line for line in _messages(error, schema, sources) if line not in lines]
    if lines:
        _raise(lines)


def _parameter_names() -> dict[str, list[str]]:
    """The keys of the free parameter mappings of the schema (imported only when set)."""
    from dataclasses import fields

    from mvmflow.align import AlignParams
    from mvmflow.catalogs import CatalogParams
    from mvmflow.fitting import FitCriteria

    align = [f.name for f in fields(AlignParams)] + [f.name for f in fields(FitCriteria)]
    return {"align.params": align,
            "align.catalogs": [f.name for f in fields(CatalogParams)]}


def _free_key_problems(config: Mapping, detectors_file: str | os.PathLike | None,
                       sources: Sequence[tuple[str, Mapping]]) -> list[str]:
    """Unknown keys in the mappings the schema leaves open: ``align.params``,
    ``align.catalogs`` (the fields of AlignParams, CatalogParams) and ``detectors`` (the
    detectors, parameter sets and set keys of ``config/detectors.yaml``), so that a typo
    there stops the run at start too, not a job hours later (issue 17)."""
    align = config.get("align") or {}
    lines = []
    if align.get("params") or align.get("catalogs"):
        for dotted, valid in _parameter_names().items():
            given = align.get(dotted.split(".")[1]) or {}
            for key in given:
                if key not in valid:
                    path = ("align", dotted.split(".")[1], key)
                    lines.append(_unknown_key(path, valid, {}, _source(path, sources)))
    if config.get("detectors") and detectors_file is not None:
        from mvmflow.params import SET_KEYS, load_defaults

        table = load_defaults(detectors_file)["detectors"]
        for det, sets in config["detectors"].items():
            if det not in table:
                path = ("detectors", det)
                lines.append(_unknown_key(path, list(table), {}, _source(path, sources)))
                continue
            for name, values in sets.items():
                valid = [k for k in table[det] if k != "scales"]
                path = ("detectors", det, name)
                if name not in valid:
                    lines.append(_unknown_key(path, valid, {}, _source(path, sources)))
                    continue
                lines += [_unknown_key(path + (k,), sorted(SET_KEYS), {},
                                       _source(path + (k,), sources))
                          for k in values if k not in SET_KEYS]
    return lines


def check_config(config: dict, schema: str | os.PathLike | Mapping, *,
                 default_file: str | os.PathLike | None = None,
                 configfiles: Sequence[str | os.PathLike] = (),
                 overrides: Mapping | None = None,
                 detectors_file: str | os.PathLike | None = None) -> None:
    """Check the workflow config at start: :func:`validate_config`, the keys of the free
    parameter mappings, then the inputs.

    Parameters
    ----------
    config : dict
        The merged config (booleans coerced and defaults filled in, in place).
    schema : path or Mapping
        The config schema or its file.
    default_file, configfiles, overrides
        The config's sources (see :func:`config_sources`): the workflow's config file, the
        ``--configfile`` files and the ``--config`` pairs.
    detectors_file : path, optional
        The per-detector drizzle defaults (the keys ``detectors`` may override); default:
        ``detectors.yaml`` beside a schema given as a file, none (not checked) otherwise.

    Raises
    ------
    ConfigError
        For any schema violation, an unknown key in ``align.params``, ``align.catalogs`` or
        ``detectors``, or a bad ``inputs`` value (a glob that matches nothing, a
        missing list or poller file, a listed exposure that does not exist).
    """
    if detectors_file is None and not isinstance(schema, Mapping):
        beside = Path(schema).with_name("detectors.yaml")
        detectors_file = beside if beside.is_file() else None
    if not isinstance(schema, Mapping):
        schema = load_schema(schema)
    sources = config_sources(default_file, configfiles, overrides)
    validate_config(config, schema, sources)
    free = _free_key_problems(config, detectors_file, sources)
    if free:
        _raise(free)
    try:
        check_inputs(config["inputs"])
    except ValueError as error:
        where = _source(("inputs",), sources)
        spec = config["inputs"]
        if isinstance(spec, str) and spec != "demo" and not os.path.isabs(spec):
            where += f", relative to {Path.cwd()}"
        _raise([f"{error} (set {where})"])
