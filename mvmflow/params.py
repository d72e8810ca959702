"""Drizzle parameters per layer: the per-detector table, config overrides, selection by n.

The defaults are ``config/detectors.yaml`` (the reference's MVM table, spec processing.md
section 2.1). A run's config may override any of them per detector::

    detectors:
      acs_wfc:
        n2: {final_bits: 336}

:func:`resolve_table` merges defaults and overrides into the run's full table;
:func:`layer_parameters` picks the set for one layer from its detector, filter and
``n = round(mean chips per covered pixel)`` (Python's round, halves to even, as the
reference). :func:`dump_resolved` writes the full table in the config's own form, so the
file can be edited and fed back with ``snakemake --configfile``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

__all__ = [
    "SBC_BLUE_FILTERS",
    "config_digest",
    "deep_merge",
    "dump_resolved",
    "layer_parameters",
    "load_defaults",
    "resolve_table",
]

SBC_BLUE_FILTERS = ("f115lp", "f122m")
"""ACS/SBC filters with their own parameter sets in the reference."""

SET_KEYS = {"pixfrac", "final_bits", "skysub", "skystat", "sky_bits", "static_mask",
            "resetbits", "cr"}


def load_defaults(path: str | os.PathLike) -> dict:
    """Read the per-detector defaults file (``config/detectors.yaml``).

    Raises
    ------
    ValueError
        If the file lacks ``common`` or ``detectors``, or a set has unknown keys.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read detector parameters {path}: {exc}") from exc
    if not isinstance(data, dict) or "common" not in data or "detectors" not in data:
        raise ValueError(f"{path}: expected top-level keys 'common' and 'detectors'")
    _check_table(data, str(path))
    return data


def _check_table(table: Mapping, where: str) -> None:
    for det, sets in table["detectors"].items():
        if not isinstance(sets, Mapping):
            raise ValueError(f"{where}: detectors.{det} must be a mapping")
        for name, values in sets.items():
            if name == "scales":
                bad = [s for s in values if s not in ("fine", "coarse")]
                if bad:
                    raise ValueError(f"{where}: detectors.{det}.scales has unknown {bad}")
                continue
            if not isinstance(values, Mapping):
                raise ValueError(f"{where}: detectors.{det}.{name} must be a mapping")
            unknown = set(values) - SET_KEYS
            if unknown:
                raise ValueError(
                    f"{where}: detectors.{det}.{name} has unknown keys {sorted(unknown)}; "
                    f"allowed: {sorted(SET_KEYS)}"
                )


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Return ``base`` updated recursively with ``override`` (neither is modified)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_table(defaults: Mapping, overrides: Mapping | None = None) -> dict:
    """Merge config overrides (``{detector: {set: {key: value}}}``) into the defaults.

    Raises
    ------
    ValueError
        For an override of an unknown detector, set or key.
    """
    table = copy.deepcopy(dict(defaults))
    for det, sets in (overrides or {}).items():
        if det not in table["detectors"]:
            raise ValueError(
                f"detector override {det!r} is not one of {sorted(table['detectors'])}"
            )
        for name in sets:
            if name not in table["detectors"][det]:
                raise ValueError(
                    f"detector override {det}.{name}: no such parameter set; "
                    f"known: {sorted(table['detectors'][det])}"
                )
        table["detectors"][det] = deep_merge(table["detectors"][det], sets)
    _check_table(table, "config 'detectors'")
    return table


def round_half_even(value: float) -> int:
    """Python's ``round`` of a mean chip count (halves to even), as the reference."""
    return int(round(value))


def layer_parameters(table: Mapping, detkey: str, filter_name: str, meannexp: float) -> dict:
    """The drizzle parameters of one layer.

    Parameters
    ----------
    table : mapping
        The resolved table (:func:`resolve_table`).
    detkey : str
        ``<instrument>_<detector>``, e.g. ``acs_wfc``.
    filter_name : str
        Normalised filter name, e.g. ``f122m``.
    meannexp : float
        Mean number of chips per covered pixel of the layer.

    Returns
    -------
    dict
        ``common`` merged with the chosen set, plus ``set`` (its name) and ``n``.
    """
    try:
        sets = table["detectors"][detkey]
    except KeyError:
        raise ValueError(f"no drizzle parameters for detector {detkey!r}") from None
    if not math.isfinite(meannexp) or meannexp <= 0:
        raise ValueError(f"mean chips per pixel must be positive, got {meannexp!r}")
    n = round_half_even(meannexp)
    if n <= 1:
        name = "n1"
    elif detkey == "acs_sbc" and filter_name in SBC_BLUE_FILTERS and n >= 6 and "n6_blue" in sets:
        name = "n6_blue"
    else:
        name = "n2"
    params = deep_merge(table["common"], sets[name])
    params["set"] = name
    params["n"] = n
    return params


def config_digest(obj) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no whitespace, NaN as text)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def dump_resolved(config: Mapping, defaults: Mapping, path: str | os.PathLike) -> dict:
    """Write the run's fully resolved configuration, detector table included.

    The file has the config's own layout (``detectors`` holds every set in full), so it
    can be edited and passed back with ``snakemake --configfile PATH``.
    """
    table = resolve_table(defaults, config.get("detectors"))
    resolved = copy.deepcopy(dict(config))
    resolved["detectors"] = {
        det: {name: values for name, values in sets.items() if name != "scales"}
        for det, sets in table["detectors"].items()
    }
    from mvmflow.workflow import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(
            "# mvmflow: fully resolved configuration of a run; edit and pass back with\n"
            "#   snakemake --configfile THIS_FILE\n"
            + yaml.safe_dump(resolved, sort_keys=False)
        )
    return resolved

