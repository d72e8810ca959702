"""mvmflow.switches: MVM_* switches from the config and the environment."""

from __future__ import annotations

import pytest

from mvmflow.switches import parse_switch, resolve_switches

DEFAULTS = {"include_small": True, "only_cte": False, "quality_testing": False}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("on", True),
        ("yes", True),
        ("true", True),
        ("1", True),
        ("ON", True),
        ("  Yes\n", True),
        ("TRUE", True),
        ("off", False),
        ("no", False),
        ("false", False),
        ("0", False),
        ("Off", False),
        (" NO ", False),
        ("\tFalse", False),
        (True, True),
        (False, False),
        (1, True),
        (0, False),
    ],
)
def test_parse_switch_accepts(value, expected):
    assert parse_switch(value, "MVM_X") is expected


@pytest.mark.parametrize(
    "value", ["", " ", "2", "-1", "y", "n", "t", "f", "enable", "none", "tru e", None, 1.0, 2, []]
)
def test_parse_switch_rejects(value):
    with pytest.raises(ValueError) as err:
        parse_switch(value, "MVM_ONLY_CTE")
    message = str(err.value)
    assert "MVM_ONLY_CTE" in message
    assert repr(value) in message
    for word in ("on", "yes", "true", "1", "off", "no", "false", "0"):
        assert word in message


def test_defaults():
    assert resolve_switches({}, environ={}) == DEFAULTS
    assert resolve_switches(None, environ={}) == DEFAULTS


def test_config_keys():
    config = {"include_small": False, "only_cte": "yes", "quality_testing": "on", "other": 1}
    assert resolve_switches(config, environ={}) == {
        "include_small": False,
        "only_cte": True,
        "quality_testing": True,
    }


def test_null_config_value_means_default():
    assert resolve_switches({"only_cte": None}, environ={}) == DEFAULTS


def test_environment_overrides_config():
    config = {"include_small": True, "only_cte": False, "quality_testing": False}
    environ = {"MVM_INCLUDE_SMALL": "off", "MVM_ONLY_CTE": " TRUE ", "MVM_QUALITY_TESTING": "1"}
    assert resolve_switches(config, environ=environ) == {
        "include_small": False,
        "only_cte": True,
        "quality_testing": True,
    }


def test_each_variable_overrides_only_its_own_key():
    for key, variable in [
        ("include_small", "MVM_INCLUDE_SMALL"),
        ("only_cte", "MVM_ONLY_CTE"),
        ("quality_testing", "MVM_QUALITY_TESTING"),
    ]:
        flipped = not DEFAULTS[key]
        result = resolve_switches({}, environ={variable: "yes" if flipped else "no"})
        assert result == {**DEFAULTS, key: flipped}


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("MVM_ONLY_CTE", "yes")
    monkeypatch.delenv("MVM_INCLUDE_SMALL", raising=False)
    monkeypatch.delenv("MVM_QUALITY_TESTING", raising=False)
    assert resolve_switches({}) == {**DEFAULTS, "only_cte": True}


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ValueError, match="environment variable MVM_QUALITY_TESTING.*'maybe'"):
        resolve_switches({}, environ={"MVM_QUALITY_TESTING": "maybe"})


def test_empty_environment_value_is_invalid():
    with pytest.raises(ValueError, match="MVM_INCLUDE_SMALL"):
        resolve_switches({}, environ={"MVM_INCLUDE_SMALL": ""})


def test_bad_config_value_names_the_key():
    with pytest.raises(ValueError, match="config key 'only_cte'.*'sometimes'"):
        resolve_switches({"only_cte": "sometimes"}, environ={})


def test_valid_environment_hides_a_bad_config_value():
    assert (
        resolve_switches({"only_cte": "sometimes"}, environ={"MVM_ONLY_CTE": "no"})["only_cte"]
        is False
    )
