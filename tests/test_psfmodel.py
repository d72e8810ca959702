"""Encircled energy of the model PSFs (mvmflow.psfmodel), which make layer-catalogue fluxes
total beyond the 1.5" of their aperture correction."""

from __future__ import annotations

import pytest

from mvmflow.psfmodel import encircled_energy, model_psf_name


def test_a_filter_with_its_own_model():
    assert model_psf_name("ACS", "WFC", "F814W") == "acs_wfc_f814w"
    assert model_psf_name("wfc3", "ir", "f110w") == "wfc3_ir_f110w"


def test_a_filter_without_a_model_takes_the_nearest_in_wavelength():
    assert model_psf_name("ACS", "WFC", "F658N") == "acs_wfc_f625w"  # filters.csv's choice
    assert model_psf_name("WFC3", "UVIS", "F336W", 3355.0) == "wfc3_uvis_f275w"
    assert model_psf_name("WFC3", "UVIS", "F814W", 8029.0) == "wfc3_uvis_f555w"
    assert model_psf_name("WFC3", "UVIS", "F336W") is None  # no wavelength: no guess
    assert model_psf_name("WFPC2", "PC", "F555W", 5400.0) is None


@pytest.mark.parametrize("name, low, high", [
    # the light beyond 1.5": 1-2 % in the optical, 3 % for the IR's broad PSF, less in the UV
    ("acs_wfc_f814w", 0.975, 0.99), ("wfc3_uvis_f555w", 0.975, 0.99),
    ("wfc3_uvis_f275w", 0.985, 0.997), ("wfc3_ir_f110w", 0.955, 0.98)])
def test_encircled_energy_at_1p5_arcsec(name, low, high):
    assert low < encircled_energy(name, 1.5) < high


def test_encircled_energy_grows_to_one():
    values = [encircled_energy("wfc3_ir_f110w", r) for r in (0.1, 0.2, 0.4, 1.0, 1.5, 5.0)]
    assert values == sorted(values) and values[0] > 0.05
    assert encircled_energy("wfc3_ir_f110w", 10.0) == pytest.approx(1.0, abs=1e-6)
