"""Drizzle parameter table: reference values, selection by n, overrides, dump and reload."""

from pathlib import Path

import pytest
import yaml

from mvmflow.params import (
    config_digest,
    dump_resolved,
    layer_parameters,
    load_defaults,
    resolve_table,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table():
    return resolve_table(load_defaults(ROOT / "config" / "detectors.yaml"))


# (detkey, filter, meannexp) -> (set, pixfrac, final_bits, skysub, skystat, sky_bits, static)
# from the reference's table, spec processing.md 2.1
REFERENCE = [
    ("wfc3_uvis", "f275w", 1.2, ("n1", 1.0, 65535, False, "median", 80, True)),
    ("wfc3_uvis", "f275w", 2.0, ("n2", 1.0, 80, True, "median", 80, True)),
    ("wfc3_ir", "f110w", 1.0, ("n1", 1.0, 65535, False, "median", 16, True)),
    ("wfc3_ir", "f110w", 3.7, ("n2", 1.0, 528, True, "median", 16, True)),
    ("acs_wfc", "f814w", 0.6, ("n1", 1.0, 65535, False, "median", 16, True)),
    ("acs_wfc", "f814w", 1.6, ("n2", 1.0, 80, True, "median", 80, True)),
    ("acs_hrc", "f435w", 1.0, ("n1", 1.0, 65535, False, "median", 0, True)),
    ("acs_hrc", "f435w", 2.4, ("n2", 1.0, 80, True, "median", 80, True)),
    ("acs_sbc", "f122m", 1.0, ("n1", 1.0, 65535, False, "median", 0, False)),
    ("acs_sbc", "f122m", 3.0, ("n2", 1.0, 0, True, "mean", 0, False)),
    ("acs_sbc", "f115lp", 6.0, ("n6_blue", 0.8, 0, True, "mean", 0, False)),
    # not blue: the reference's index-key bug is not reproduced (config comment)
    ("acs_sbc", "f165lp", 6.0, ("n2", 1.0, 0, True, "mean", 0, False)),
]


@pytest.mark.parametrize("detkey, filt, n, expected", REFERENCE)
def test_reference_table(table, detkey, filt, n, expected):
    p = layer_parameters(table, detkey, filt, n)
    got = (p["set"], p["pixfrac"], p["final_bits"], p["skysub"], p["skystat"], p["sky_bits"],
           p["static_mask"])
    assert got == expected
    assert p["kernel"] == "square" and p["wht_type"] == "EXP" and p["units"] == "cps"


def test_n_rounds_half_to_even_as_the_reference(table):
    assert layer_parameters(table, "acs_wfc", "f814w", 1.5)["n"] == 2
    assert layer_parameters(table, "acs_wfc", "f814w", 2.5)["n"] == 2
    assert layer_parameters(table, "acs_wfc", "f814w", 1.49)["set"] == "n1"


def test_ir_scales(table):
    assert table["detectors"]["wfc3_ir"]["scales"] == ["coarse", "fine"]
    assert table["detectors"]["acs_wfc"]["scales"] == ["fine"]


def test_override_changes_one_value(table):
    defaults = load_defaults(ROOT / "config" / "detectors.yaml")
    t = resolve_table(defaults, {"acs_wfc": {"n2": {"final_bits": 336, "cr": {"snr": [4, 3]}}}})
    p = layer_parameters(t, "acs_wfc", "f814w", 2)
    assert p["final_bits"] == 336 and p["cr"]["snr"] == [4, 3]
    assert p["cr"]["scale"] == [1.5, 1.2]  # untouched sibling kept
    assert layer_parameters(table, "acs_wfc", "f814w", 2)["final_bits"] == 80  # no aliasing


@pytest.mark.parametrize(
    "override, message",
    [
        ({"wfpc2_pc": {"n2": {"pixfrac": 1}}}, "wfpc2_pc"),
        ({"acs_wfc": {"n3": {"pixfrac": 1}}}, "n3"),
        ({"acs_wfc": {"n2": {"pixfrac_typo": 1}}}, "pixfrac_typo"),
    ],
)
def test_bad_override_is_a_clear_error(override, message):
    defaults = load_defaults(ROOT / "config" / "detectors.yaml")
    with pytest.raises(ValueError, match=message):
        resolve_table(defaults, override)


def test_unknown_detector_and_bad_n(table):
    with pytest.raises(ValueError, match="stis_ccd"):
        layer_parameters(table, "stis_ccd", "f28x50lp", 1)
    with pytest.raises(ValueError, match="positive"):
        layer_parameters(table, "acs_wfc", "f814w", 0)


def test_dump_round_trip(tmp_path):
    defaults = load_defaults(ROOT / "config" / "detectors.yaml")
    config = {"inputs": "demo", "outdir": "results",
              "detectors": {"wfc3_ir": {"n2": {"pixfrac": 0.8}}}}
    out = tmp_path / "resolved.yaml"
    resolved = dump_resolved(config, defaults, out)
    reread = yaml.safe_load(out.read_text())
    assert reread["detectors"]["wfc3_ir"]["n2"]["pixfrac"] == 0.8
    assert reread["detectors"]["acs_sbc"]["n6_blue"]["pixfrac"] == 0.8
    # feeding the dump back resolves to the same table
    assert resolve_table(defaults, reread["detectors"]) == resolve_table(
        defaults, resolved["detectors"])
    assert config_digest(reread) == config_digest(resolved)


def test_digest_is_order_independent():
    assert config_digest({"a": 1, "b": [1, 2]}) == config_digest({"b": [1, 2], "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})
