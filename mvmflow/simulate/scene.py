"""The simulated sky: a truth catalogue of stars and galaxies, and a Gaia-like reference catalogue.

Sources
-------
Stars are drawn uniformly over a rectangle of the tangent plane with a power-law luminosity
function ``dN/dm ~ 10**(slope * m)`` in ``mag_v`` (the ST magnitude at 5500 A after
extinction). Their spectra are black bodies (a crude LMC colour-magnitude diagram: a main
sequence whose temperature rises with brightness, and red giants), reddened by a
``A_lambda = A_V * 5500 / lambda`` law. A few percent are Milky Way foreground stars with large
proper motions; the rest move with the LMC (proper motion (1.91, 0.23) mas/yr, dispersion
0.1 mas/yr). Parallaxes are not simulated. Galaxies are Sersic profiles (n = 1 or 4) with
black-body-like colours and no proper motion.

The magnitude of a source in a filter is the ST magnitude of its spectrum at the filter's pivot
wavelength, ``mag = -2.5 log10(f_lambda(PHOTPLAM)) - 21.1``, and its true count rate is
``rate = f_lambda(PHOTPLAM) / PHOTFLAM`` (e-/s): exactly the relation the header ``PHOTFLAM``
and ``PHOTZPT`` keywords define, so photometry calibrated with the header reproduces ``mag``.

Reference catalogue
-------------------
A Gaia-DR3-like catalogue of the stars with ``G < 20.8`` (``G`` approximated as the AB
magnitude at 6400 A minus 0.1): positions at epoch 2016.0 perturbed by Gaussian errors whose
size grows with ``G`` as in Gaia DR3 (0.02 mas at ``G < 15`` to 1.6 mas at ``G = 21``),
proper motions with errors of the same size in mas/yr.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from mvmflow.simulate.data import FilterInfo
from mvmflow.simulate.pointing import tan_deproject

__all__ = [
    "REFERENCE_EPOCH",
    "SceneSpec",
    "make_refcat",
    "make_sources",
    "positions_at",
    "source_rates",
]

REFERENCE_EPOCH = 2016.0
"""Epoch (Julian year) of the truth positions and of the reference catalogue."""

_H_C_K = 1.438776877e8  # h c / k in Angstrom K
LMC_PM = (1.91, 0.229)  # mas/yr (Kallivayalil et al. 2013)


@dataclass(frozen=True)
class SceneSpec:
    """What the sky contains.

    Attributes
    ----------
    star_density : float
        Stars per square arcminute (all magnitudes in ``mag_range``).
    mag_range : tuple of float
        Brightest and faintest ``mag_v`` (ST magnitude at 5500 A).
    lf_slope : float
        Slope of the luminosity function ``dN/dm ~ 10**(slope m)``.
    bright_stars : int
        Extra stars at ``mag_v`` 15.5-17 (they saturate in long CCD exposures).
    galaxy_density : float
        Background galaxies per square arcminute.
    foreground_fraction : float
        Fraction of stars that are Milky Way foreground stars.
    young_fraction : float
        Fraction of stars that belong to a young LMC population: hot (15 000-35 000 K) upper
        main-sequence stars with a flat luminosity function (slope 0.12) down to
        ``mag_v = 23``; they make the field visible in the UV.
    extinction_av : float
        ``A_V`` of the LMC stars (magnitudes).
    margin_arcsec : float
        How far beyond the union of the exposures the catalogue extends.
    """

    star_density: float = 600.0
    mag_range: tuple[float, float] = (17.0, 25.5)
    lf_slope: float = 0.3
    bright_stars: int = 3
    galaxy_density: float = 4.0
    foreground_fraction: float = 0.03
    young_fraction: float = 0.1
    extinction_av: float = 0.25
    margin_arcsec: float = 8.0


def _flam_ratio(teff: np.ndarray, lam: float, av: np.ndarray) -> np.ndarray:
    """``f_lambda(lam) / f_lambda(5500)`` of a reddened black body."""
    def bb(lam_a):
        return lam_a**-5 / np.expm1(_H_C_K / (lam_a * teff))
    return bb(lam) / bb(5500.0) * 10 ** (-0.4 * av * (5500.0 / lam - 1.0))


def _power_law_mags(rng, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    if abs(slope) < 1e-9:
        return rng.uniform(lo, hi, n)
    a = 10 ** (slope * lo)
    b = 10 ** (slope * hi)
    return np.log10(a + (b - a) * rng.random(n)) / slope


def make_sources(spec: SceneSpec, center: tuple[float, float], half_size: tuple[float, float],
                 rng: np.random.Generator) -> Table:
    """Draw the truth sources over ``center +- half_size`` (tangent plane, degrees)."""
    area = 4 * half_size[0] * half_size[1] * 3600.0  # arcmin^2
    n_star = int(rng.poisson(spec.star_density * area)) + spec.bright_stars
    n_gal = int(rng.poisson(spec.galaxy_density * area))
    n = n_star + n_gal
    xi = (rng.random(n) * 2 - 1) * half_size[0]
    eta = (rng.random(n) * 2 - 1) * half_size[1]
    ra, dec = tan_deproject(center[0], center[1], xi, eta)

    mag = np.empty(n)
    teff = np.empty(n)
    av = np.zeros(n)
    pmra = np.zeros(n)
    pmdec = np.zeros(n)
    kind = np.array(["star"] * n_star + ["galaxy"] * n_gal)
    population = np.array(["lmc"] * n_star + ["background"] * n_gal, dtype="<U10")

    # stars
    nf = n_star - spec.bright_stars
    mag[:nf] = _power_law_mags(rng, nf, *spec.mag_range, spec.lf_slope)
    mag[nf:n_star] = rng.uniform(15.5, 17.0, spec.bright_stars)
    lo, hi = spec.mag_range
    frac = np.clip((mag[:n_star] - lo) / (hi - lo), 0, 1)
    log_t = 4.45 - 0.67 * frac + rng.normal(0, 0.03, n_star)  # main sequence
    giant = (rng.random(n_star) < 0.3) & (mag[:n_star] < 21.5)
    log_t[giant] = np.log10(rng.uniform(4000, 5200, giant.sum()))
    young = np.zeros(n_star, dtype=bool)
    young[:nf] = rng.random(nf) < spec.young_fraction
    young &= ~giant
    mag[:n_star][young] = _power_law_mags(rng, int(young.sum()), lo, min(23.0, hi), 0.12)
    log_t[young] = np.log10(rng.uniform(15000, 35000, young.sum()))
    teff[:n_star] = 10**log_t
    av[:n_star] = spec.extinction_av
    pmra[:n_star] = rng.normal(LMC_PM[0], 0.1, n_star)
    pmdec[:n_star] = rng.normal(LMC_PM[1], 0.1, n_star)
    fg = rng.random(n_star) < spec.foreground_fraction
    fg[nf:] = True  # the very bright ones are foreground stars
    population[:n_star][giant] = "lmc_giant"
    population[:n_star][young] = "lmc_young"
    population[:n_star][fg] = "foreground"
    teff[:n_star][fg] = rng.uniform(4500, 6500, fg.sum())
    av[:n_star][fg] = 0.05
    pmra[:n_star][fg] = rng.normal(0, 8.0, fg.sum())
    pmdec[:n_star][fg] = rng.normal(-3.0, 8.0, fg.sum())
    mag[:nf][fg[:nf]] = rng.uniform(17.0, 21.5, fg[:nf].sum())

    # galaxies
    sersic = np.zeros(n)
    r_eff = np.zeros(n)
    q = np.ones(n)
    theta = np.zeros(n)
    sl = slice(n_star, n)
    sersic[sl] = rng.choice([1.0, 4.0], n_gal, p=[0.6, 0.4])
    r_eff[sl] = rng.uniform(0.25, 0.9, n_gal)
    q[sl] = rng.uniform(0.35, 1.0, n_gal)
    theta[sl] = rng.uniform(0, 180, n_gal)
    mag[sl] = rng.uniform(19.5, 22.5, n_gal)
    teff[sl] = np.where(sersic[sl] > 2, 4500.0, 8000.0)
    av[sl] = spec.extinction_av

    table = Table()
    table["id"] = np.arange(1, n + 1, dtype=np.int64)
    table["type"] = kind
    table["population"] = population
    table["ra"] = ra
    table["dec"] = dec
    table["pmra"] = pmra
    table["pmdec"] = pmdec
    table["epoch"] = np.full(n, REFERENCE_EPOCH)
    table["mag_v"] = mag
    table["teff"] = teff
    table["av"] = av
    table["sersic_n"] = sersic
    table["r_eff"] = r_eff
    table["axis_ratio"] = q
    table["theta"] = theta
    table["ra"].unit = table["dec"].unit = "deg"
    table["pmra"].unit = table["pmdec"].unit = "mas / yr"
    table["epoch"].unit = "yr"
    table["teff"].unit = "K"
    table["r_eff"].unit = "arcsec"
    table["theta"].unit = "deg"
    table["mag_v"].description = "ST magnitude at 5500 A (after extinction)"
    table["pmra"].description = "proper motion in RA times cos(Dec)"
    table["theta"].description = "position angle of the major axis, east of north"
    return table


def source_rates(sources: Table, info: FilterInfo) -> tuple[np.ndarray, np.ndarray]:
    """ST magnitudes and true count rates (e-/s) of ``sources`` in a filter."""
    flam_v = 10 ** (-0.4 * (np.asarray(sources["mag_v"]) + 21.1))
    flam = flam_v * _flam_ratio(np.asarray(sources["teff"]), info.photplam,
                                np.asarray(sources["av"]))
    mag = -2.5 * np.log10(flam) - 21.1
    return mag, flam / info.photflam


def add_filter_columns(sources: Table, infos) -> None:
    """Add ``mag_<key>`` and ``rate_<key>`` columns for every filter in ``infos``."""
    for info in infos:
        mag, rate = source_rates(sources, info)
        sources[f"mag_{info.key}"] = mag
        sources[f"rate_{info.key}"] = rate
        sources[f"rate_{info.key}"].unit = "electron / s"
        sources[f"mag_{info.key}"].description = f"ST magnitude in {info.photmode}"


def positions_at(sources: Table, epoch: float) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (deg) of ``sources`` at Julian year ``epoch`` (proper motion only)."""
    dt = epoch - np.asarray(sources["epoch"])
    dec0 = np.asarray(sources["dec"])
    dec = dec0 + np.asarray(sources["pmdec"]) * dt / 3.6e6
    ra = np.asarray(sources["ra"]) + np.asarray(sources["pmra"]) * dt / 3.6e6 / np.cos(
        np.radians(dec0))
    return ra % 360.0, dec


def _gaia_sigma(g: np.ndarray) -> np.ndarray:
    """Gaia-DR3-like position error (mas) as a function of G."""
    return 0.02 + 0.04 * 10 ** (0.4 * (np.clip(g, 12, 21.5) - 17.0))


def gaia_g(sources: Table) -> np.ndarray:
    """Approximate Gaia G: AB magnitude at 6400 A minus 0.1."""
    flam_v = 10 ** (-0.4 * (np.asarray(sources["mag_v"]) + 21.1))
    flam = flam_v * _flam_ratio(np.asarray(sources["teff"]), 6400.0, np.asarray(sources["av"]))
    fnu = flam * 6400.0**2 / 2.99792458e18
    return -2.5 * np.log10(fnu) - 48.6 - 0.1


def make_refcat(sources: Table, rng: np.random.Generator, g_limit: float = 20.8) -> Table:
    """A Gaia-like catalogue of the stars of ``sources`` brighter than ``g_limit``."""
    stars = sources[sources["type"] == "star"]
    g = gaia_g(stars)
    keep = g < g_limit
    stars, g = stars[keep], g[keep]
    n = len(stars)
    sig = _gaia_sigma(g)
    dec0 = np.asarray(stars["dec"])
    dra = rng.normal(0, sig) / 3.6e6 / np.cos(np.radians(dec0))
    ddec = rng.normal(0, sig) / 3.6e6
    psig = 1.0 * sig
    out = Table()
    out["source_id"] = 4657000000000000000 + np.asarray(stars["id"], dtype=np.int64) * 1009
    out["ra"] = (np.asarray(stars["ra"]) + dra) % 360.0
    out["ra_error"] = sig
    out["dec"] = dec0 + ddec
    out["dec_error"] = sig
    out["pmra"] = np.asarray(stars["pmra"]) + rng.normal(0, psig)
    out["pmra_error"] = psig
    out["pmdec"] = np.asarray(stars["pmdec"]) + rng.normal(0, psig)
    out["pmdec_error"] = psig
    out["phot_g_mean_mag"] = g
    out["ref_epoch"] = np.full(n, REFERENCE_EPOCH)
    out["truth_id"] = np.asarray(stars["id"], dtype=np.int64)
    for col in ("ra", "dec"):
        out[col].unit = "deg"
    for col in ("ra_error", "dec_error"):
        out[col].unit = "mas"
    for col in ("pmra", "pmdec", "pmra_error", "pmdec_error"):
        out[col].unit = "mas / yr"
    out["phot_g_mean_mag"].unit = "mag"
    out["ref_epoch"].unit = "yr"
    out["truth_id"].description = "id of the source in sources.ecsv"
    return out
