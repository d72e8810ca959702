"""mvmflow.config: the config checked at start, with short messages naming key and source."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mvmflow.config import (
    ConfigError,
    boolean_keys,
    check_config,
    coerce_booleans,
    config_sources,
    load_schema,
    validate_config,
)
from mvmflow.switches import FALSE_WORDS, TRUE_WORDS

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "config" / "schema.yaml")
DEFAULT_FILE = ROOT / "config" / "config.yaml"
DEFAULT = yaml.safe_load(DEFAULT_FILE.read_text())
BOOLEAN_KEYS = boolean_keys(SCHEMA)


def _set(config: dict, dotted: str, value) -> dict:
    """A nested {a: {b: value}} for 'a.b', also set in ``config``."""
    *parents, last = dotted.split(".")
    part, node = {}, config
    top = part
    for key in parents:
        node = node.setdefault(key, {})
        part[key] = {}
        part = part[key]
    node[last] = value
    part[last] = value
    return top


def _get(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def _merged(overrides: dict) -> dict:
    """The default config with ``overrides`` merged in, as snakemake does."""
    config = copy.deepcopy(DEFAULT)

    def merge(into, new):
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(config, overrides)
    return config


def _error(config: dict, sources) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, copy.deepcopy(SCHEMA), sources)
    return str(info.value)


# -- the schema ------------------------------------------------------------------------------


def test_boolean_keys_come_from_the_schema():
    assert {"quality_testing", "include_small", "only_cte", "mosaic.enabled",
            "combine.enabled", "align.enabled", "products.exposure_level"} <= set(BOOLEAN_KEYS)


def _objects(schema, path="<config>"):
    if "properties" in schema:
        yield path, schema
        for key, sub in schema["properties"].items():
            yield from _objects(sub, f"{path}.{key}")
    for keyword in ("items", "additionalProperties"):
        if isinstance(schema.get(keyword), dict):
            yield from _objects(schema[keyword], f"{path}[{keyword}]")


def test_every_object_with_named_keys_rejects_unknown_keys():
    objects = list(_objects(SCHEMA))
    assert len(objects) >= 7
    for path, schema in objects:
        assert schema.get("additionalProperties") is False, path


def test_defaults_are_filled_in_at_every_level():
    config = {"inputs": "demo", "outdir": "results", "mosaic": {"enabled": True}}
    validate_config(config, copy.deepcopy(SCHEMA))
    assert config["mosaic"] == {**DEFAULT["mosaic"], "enabled": True}
    assert config == _merged({"mosaic": {"enabled": True}})


# -- booleans --------------------------------------------------------------------------------


WORDS = [(w, True) for w in TRUE_WORDS] + [(w, False) for w in FALSE_WORDS]
WORDS += [("TRUE", True), ("Off", False), ("Yes", True), (1, True), (0, False)]


@pytest.mark.parametrize("key", BOOLEAN_KEYS)
def test_every_boolean_key_accepts_the_switch_words(key):
    for word, expected in WORDS:
        config = _merged({})
        _set(config, key, word)
        validate_config(config, copy.deepcopy(SCHEMA))
        assert _get(config, key) is expected, (key, word)


@pytest.mark.parametrize("key", BOOLEAN_KEYS)
def test_a_bad_boolean_is_one_line_naming_key_value_and_source(key):
    config = _merged({})
    override = _set(config, key, "maybe")
    message = _error(config, config_sources(DEFAULT_FILE, (), override))
    assert message == (f"Config error: bad value 'maybe' for {key!r} set on the --config "
                       "command line; expected a boolean (on/off, yes/no, true/false, 1/0, "
                       "any case)")


def test_tile_size_and_keep_intermediates():
    """The two reduce settings: defaults 4096 and true; switch words for keep_intermediates."""
    assert DEFAULT["tile_size"] == 4096 and DEFAULT["keep_intermediates"] is True
    assert "keep_intermediates" in BOOLEAN_KEYS
    config = {"inputs": "demo", "outdir": "results"}
    validate_config(config, copy.deepcopy(SCHEMA))
    assert config["tile_size"] == 4096 and config["keep_intermediates"] is True
    assert config["mosaic"]["tile_size"] == 4096  # the mosaic's own setting
    config = _merged({"keep_intermediates": "off", "tile_size": 64})
    validate_config(config, copy.deepcopy(SCHEMA))
    assert config["keep_intermediates"] is False and config["tile_size"] == 64


def test_coerce_booleans_leaves_other_keys_alone():
    config = {"inputs": "1", "outdir": "yes", "quality_testing": "YES",
              "cutouts": [{"ra": 1, "dec": 0, "size": 1}]}
    coerce_booleans(config, SCHEMA)
    assert config == {"inputs": "1", "outdir": "yes", "quality_testing": True,
                      "cutouts": [{"ra": 1, "dec": 0, "size": 1}]}


# -- unknown keys and bad values -------------------------------------------------------------


def test_misspelled_top_level_key_on_the_command_line():
    override = {"quality_tsting": "true"}
    message = _error(_merged(override), config_sources(DEFAULT_FILE, (), override))
    assert message == ("Config error: unknown key 'quality_tsting' set on the --config "
                       "command line; did you mean 'quality_testing'?")


def test_misspelled_nested_key_in_a_configfile(tmp_path):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("mosaic:\n  enabeld: true\n")
    second.write_text("mosaic:\n  enabeld: false\n")
    overrides = {"outdir": "out"}
    config = _merged({"mosaic": {"enabeld": False}, "outdir": "out"})
    message = _error(config, config_sources(DEFAULT_FILE, [first, second], overrides))
    # the later config file wins, as in snakemake's merge
    assert message == (f"Config error: unknown key 'mosaic.enabeld' set in the config file "
                       f"{second} (--configfile); did you mean 'mosaic.enabled'?")


def test_typo_in_the_default_config_file(tmp_path):
    default = tmp_path / "config.yaml"
    default.write_text(DEFAULT_FILE.read_text().replace("layer_method:", "layer_methd:"))
    config = yaml.safe_load(default.read_text())
    message = _error(config, config_sources(default, [], {}))
    assert "unknown key 'layer_methd'" in message
    assert f"in the default config file {default};" in message
    assert "did you mean 'layer_method'?" in message


def test_a_key_at_the_wrong_level_is_found_elsewhere():
    override = {"projection_cell": 81}
    message = _error(_merged(override), config_sources(DEFAULT_FILE, (), override))
    assert "unknown key 'projection_cell'" in message
    assert "did you mean 'mosaic.projection_cell'?" in message


def test_no_close_key_lists_the_valid_ones():
    override = {"combine": {"zzz": 1}}
    message = _error(_merged(override), config_sources(DEFAULT_FILE, (), override))
    assert message.endswith("valid keys here: enabled, method")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"mosaic": {"tile_size": 10}},
         "bad value 10 for 'mosaic.tile_size' set on the --config command line; expected an "
         "integer >= 64"),
        ({"tile_size": 10},
         "bad value 10 for 'tile_size' set on the --config command line; expected an "
         "integer >= 64"),
        ({"tile_size": 256.5},
         "bad value 256.5 for 'tile_size' set on the --config command line; expected an "
         "integer >= 64"),
        ({"keep_intermediates": "sometimes"},
         "bad value 'sometimes' for 'keep_intermediates' set on the --config command line; "
         "expected a boolean (on/off, yes/no, true/false, 1/0, any case)"),
        ({"layer_method": "kmean"},
         "bad value 'kmean' for 'layer_method' set on the --config command line; expected one "
         "of 'all', 'hard', 'kmeans'; did you mean 'kmeans'?"),
        ({"mosaic": {"projection_cell": "nearest"}},
         "bad value 'nearest' for 'mosaic.projection_cell' set on the --config command line; "
         "expected one of 'auto' or an integer from 0 to 2643"),
        ({"exp_limit": 1},
         "bad value 1 for 'exp_limit' set on the --config command line; expected a number > 1"),
        ({"cosmic_rays": {"acs_wfx": "never"}},
         "unknown key 'cosmic_rays.acs_wfx' set on the --config command line; did you mean "
         "'cosmic_rays.acs_wfc'?"),
        ({"cutouts": [{"ra": 10, "dec": 0}]},
         "missing required key 'size' in 'cutouts[0]' set on the --config command line; "
         "expected a number > 0 or a list of 2 (items: a number > 0)"),
        ({"mosaic": True},
         "bad value True for 'mosaic' set on the --config command line; expected a mapping"),
    ],
)
def test_bad_values_name_key_value_expectation_and_source(override, expected):
    message = _error(_merged(override), config_sources(DEFAULT_FILE, (), override))
    assert message == f"Config error: {expected}"


def test_the_last_source_that_sets_a_key_is_named(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("layer_method: hardd\n")
    config = _merged({"layer_method": "hardd"})
    assert f"set in the config file {mine} (--configfile)" in _error(
        config, config_sources(DEFAULT_FILE, [mine], {"outdir": "x"}))
    assert "set on the --config command line" in _error(
        config, config_sources(DEFAULT_FILE, [mine], {"layer_method": "hardd"}))


def test_several_problems_one_line_each():
    override = {"quality_tsting": 1, "mosaic": {"scale": "fin"}}
    message = _error(_merged(override), config_sources(DEFAULT_FILE, (), override))
    lines = message.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("Config error: ") for line in lines)
    assert "'quality_tsting'" in message and "did you mean 'fine'?" in message


def test_many_problems_are_capped():
    override = {f"key{n}": n for n in range(7)}
    message = _error(_merged(override), config_sources(DEFAULT_FILE, (), override))
    assert len(message.splitlines()) == 6
    assert message.splitlines()[-1] == "... and 2 more"


# -- inputs ----------------------------------------------------------------------------------


def _inputs_error(tmp_path, monkeypatch, spec) -> str:
    monkeypatch.chdir(tmp_path)
    override = {"inputs": spec}
    with pytest.raises(ConfigError) as info:
        check_config(_merged(override), SCHEMA, default_file=DEFAULT_FILE, overrides=override)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    return message


def test_inputs_glob_matching_nothing(tmp_path, monkeypatch):
    message = _inputs_error(tmp_path, monkeypatch, "data/*_flc.fits")
    assert message == ("Config error: inputs: the pattern 'data/*_flc.fits' matches no file "
                       f"(set on the --config command line, relative to {tmp_path})")


def test_inputs_missing_list_file(tmp_path, monkeypatch):
    message = _inputs_error(tmp_path, monkeypatch, "my_list.txt")
    assert "inputs: 'my_list.txt' is neither 'demo', a glob pattern, nor an existing list " \
           "file" in message
    assert "set on the --config command line" in message


def test_inputs_list_naming_a_missing_exposure(tmp_path, monkeypatch):
    (tmp_path / "list.txt").write_text("# mine\nib2v01abq_flc.fits\n")
    message = _inputs_error(tmp_path, monkeypatch, "list.txt")
    assert message.startswith("Config error: inputs: list.txt, line 2: listed exposure "
                              "ib2v01abq_flc.fits does not exist")


def test_inputs_poller_naming_a_missing_exposure(tmp_path, monkeypatch):
    (tmp_path / "skycell-p0081x14y14_input.out").write_text(
        "ib2v01abq_flt.fits,11360,B2V,01,602.937,F160W,IR,skycell-p0081x14y14,NEW,"
        "/nowhere/ib2v01abq_flt.fits")
    message = _inputs_error(tmp_path, monkeypatch, "skycell-p0081x14y14_input.out")
    assert "inputs: skycell-p0081x14y14_input.out, row 1: exposure ib2v01abq_flt.fits" \
           in message


def test_inputs_directory(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    message = _inputs_error(tmp_path, monkeypatch, "data")
    assert "inputs: 'data' is a directory; give a glob pattern such as 'data/*_fl?.fits'" \
           in message


def test_inputs_binary_file(tmp_path, monkeypatch):
    (tmp_path / "image.fit").write_bytes(b"\xff\xfe\x00\x81" * 10)
    message = _inputs_error(tmp_path, monkeypatch, "image.fit")
    assert "inputs: 'image.fit' is not a text list of exposures" in message


def test_inputs_good_values_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ib2v01abq_flc.fits").write_bytes(b"")
    (tmp_path / "list.txt").write_text("data/ib2v01abq_flc.fits\n")
    for spec in ("demo", "data/*_flc.fits", "list.txt"):
        config = _merged({"inputs": spec})
        check_config(config, ROOT / "config" / "schema.yaml", default_file=DEFAULT_FILE)
        assert config["inputs"] == spec


# -- end to end: snakemake dry runs ----------------------------------------------------------


def _dry_run(workdir: Path, *args: str) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "-n", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=300)
    return out.returncode, out.stdout + out.stderr


def _assert_short_failure(code: int, output: str, *expected: str) -> None:
    assert code != 0, output
    assert len(output.splitlines()) < 15, output
    assert "Traceback" not in output and "File " not in output, output
    for text in expected:
        assert text in output, output


def test_dry_run_misspelled_key_on_the_command_line(tmp_path):
    code, output = _dry_run(tmp_path, "--config", "quality_tsting=true")
    _assert_short_failure(code, output, "unknown key 'quality_tsting'",
                          "on the --config command line", "did you mean 'quality_testing'?")


def test_dry_run_misspelled_nested_key_in_a_configfile(tmp_path):
    mine = tmp_path / "my.yaml"
    mine.write_text("mosaic:\n  enabeld: true\n")
    code, output = _dry_run(tmp_path, "--configfile", str(mine))
    _assert_short_failure(code, output, "unknown key 'mosaic.enabeld'",
                          f"in the config file {mine} (--configfile)",
                          "did you mean 'mosaic.enabled'?")


def test_dry_run_bad_inputs_glob_fails_at_start(tmp_path):
    code, output = _dry_run(tmp_path, "--config", "inputs=data/*_flc.fits")
    _assert_short_failure(code, output, "inputs: the pattern 'data/*_flc.fits' matches no file")
    assert len([line for line in output.splitlines() if "Config error" in line]) == 1


@pytest.mark.parametrize("word", ["true", "on"])
def test_dry_run_accepts_boolean_words(tmp_path, word):
    code, output = _dry_run(tmp_path, "--config", f"quality_testing={word}",
                            "combine={enabled: " + ("no" if word == "on" else "false") + "}")
    assert code == 0, output
