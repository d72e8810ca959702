"""``simulate()``: plan the exposures of a preset, draw the sky, render and write everything."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.time import Time

from mvmflow.simulate.data import aperture_info, filter_info, template
from mvmflow.simulate.detectors import Detector, detector
from mvmflow.simulate.distortion import full_chip_wcs, template_linear_wcs
from mvmflow.simulate.exposure import ExposurePlan, make_hdulist, make_header_hdulist
from mvmflow.simulate.pointing import (
    SkyTransform,
    place_chips,
    rotation,
    tan_deproject,
    tan_project,
    transform_linear_wcs,
)
from mvmflow.simulate.presets import SKY_RATES, Preset, draw_pointing_errors, get_preset
from mvmflow.simulate.psf import load_psf
from mvmflow.simulate.render import ChipSetup, render_chip
from mvmflow.simulate.scene import (
    REFERENCE_EPOCH,
    add_filter_columns,
    make_refcat,
    make_sources,
    positions_at,
)
from mvmflow.simulate.truth import write_table

__all__ = ["SimulationResult", "plan_exposures", "simulate"]

log = logging.getLogger("mvmflow.simulate")

# RNG stream identifiers (np.random.default_rng([seed, stream, index]))
_ERRORS, _SCENE, _REFCAT, _EXPOSURE = 1, 2, 3, 4
_OVERHEAD = {"WFC": 140.0, "HRC": 100.0, "SBC": 60.0, "UVIS": 110.0, "IR": 60.0}
_EXP_IDS = [a + b for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz0123456789"]


@dataclass
class SimulationResult:
    """What :func:`simulate` wrote.

    Attributes
    ----------
    preset : str
    seed : int
    out : Path
    exposures : list of Path
        Every exposure file, in observation order.
    truth : dict
        ``sources``, ``exposures``, ``chips``, ``refcat`` -> path of the ECSV.
    """

    preset: str
    seed: int
    out: Path
    exposures: list[Path] = field(default_factory=list)
    truth: dict[str, Path] = field(default_factory=dict)

    @property
    def truth_dir(self) -> Path:
        return self.out / "truth"


def _readnoise(det: Detector, ccdchip: int) -> tuple[float, float]:
    if det.effective_readnoise is not None:
        return (det.effective_readnoise, det.effective_readnoise)
    primary = template(det.key).primary
    left, right = det.readnoise_keys[ccdchip]
    return (float(primary[f"READNSE{left}"]), float(primary[f"READNSE{right}"]))


def _ir_sampling(exptime: float) -> tuple[str, int]:
    nsamp = int(round((exptime - 2.93) / 25.0)) + 2
    return "SPARS25", max(2, min(nsamp, 16))


def _plan_visit(center: tuple[float, float], visit, err,
                first_index: int) -> list[ExposurePlan]:
    """The planned exposures of one visit of a preset centred on ``center``; ``err`` is its
    pointing error, ``first_index`` its first exposure's index."""
    plans: list[ExposurePlan] = []
    ra_v, dec_v = (float(v) for v in tan_deproject(
        *center, visit.offset[0] / 3600.0, visit.offset[1] / 3600.0))
    error = SkyTransform(src=(ra_v, dec_v), dst=(ra_v, dec_v), rotation_deg=err[2],
                         shift_arcsec=(err[0], err[1]))
    mjd = float(Time(visit.start, format="isot", scale="utc").mjd)
    letter = "j" if visit.instrument == "ACS" else "i"
    asn_id = f"{letter}{visit.program}{visit.visit}010".upper()
    for k, spec in enumerate(visit.exposures):
        det = detector(visit.instrument, spec.detector)
        ap = aperture_info(spec.aperture)
        if ap.instrument != det.instrument or ap.detector != det.name:
            raise ValueError(f"aperture {ap.name} is not on {det.instrument}/{det.name}")
        info = filter_info(det.instrument, det.name, spec.filter)
        # dither along the detector axes of the (dither-free) placement
        first, _ = template_linear_wcs(det, det.chips[0])
        rot = visit.pa - first.orientat
        cd = rotation(rot) @ first.cd
        ux = cd[:, 0] / np.hypot(*cd[:, 0])
        uy = cd[:, 1] / np.hypot(*cd[:, 1])
        off = (spec.dither[0] * ux + spec.dither[1] * uy) / 3600.0
        ra_t, dec_t = (float(v) for v in tan_deproject(ra_v, dec_v, off[0], off[1]))
        true_chips = place_chips(det, ap, ra_t, dec_t, visit.pa)
        header_chips = {c: transform_linear_wcs(lin, error) for c, lin in true_chips.items()}
        hra, hdec = error(ra_t, dec_t)
        suffix = "flc" if det.name in ("WFC", "UVIS") else "flt"
        samp_seq, nsamp = _ir_sampling(spec.exptime) if det.name == "IR" else ("", 0)
        plans.append(ExposurePlan(
            index=first_index + len(plans),
            rootname=f"{letter}{visit.program}{visit.visit}{_EXP_IDS[k + 1]}q",
            suffix=suffix, det=det, aperture=ap, filter=info, proposid=visit.proposid,
            visit=visit.visit, linenum=f"{visit.visit}.{k + 1:03d}", asn_id=asn_id,
            targname=visit.targname, target=center, expstart=mjd, exptime=spec.exptime,
            dither=spec.dither, pointing=(ra_t, dec_t, visit.pa), true_chips=true_chips,
            header_chips=header_chips, header_pointing=(float(hra), float(hdec)),
            error=tuple(err), error_ref=(ra_v, dec_v), nsamp=nsamp, samp_seq=samp_seq))
        mjd += (spec.exptime + _OVERHEAD[det.name]) / 86400.0
    return plans


def _plan_visit_job(args):
    return _plan_visit(*args)


def plan_exposures(preset: Preset, seed: int, workers: int = 1) -> list[ExposurePlan]:
    """The planned exposures of ``preset`` (pointings, WCSs, names, times), in order.

    Visits are independent (``workers`` processes plan them at once; the same plans).
    """
    errors = draw_pointing_errors(preset, np.random.default_rng([seed, _ERRORS]))
    firsts = np.cumsum([0] + [len(v.exposures) for v in preset.visits])[:-1]
    jobs = [((preset.ra, preset.dec), visit, err, int(i))
            for visit, err, i in zip(preset.visits, errors, firsts, strict=True)]
    if workers <= 1 or len(jobs) < 8:
        return [plan for job in jobs for plan in _plan_visit(*job)]
    with _pool(workers) as pool:
        return [plan for plans in pool.map(_plan_visit_job, jobs, chunksize=8)
                for plan in plans]


def _field(plans: list[ExposurePlan], center, margin: float):
    xi, eta = [], []
    for plan in plans:
        for chip in plan.ccdchips:
            x0, y0, nx, ny = plan.region(chip)
            wcs = full_chip_wcs(plan.det, chip, plan.true_chips[chip], x0, y0, nx, ny)
            px = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
            py = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
            ra, dec = wcs.all_pix2world(px, py, 0)
            a, b = tan_project(*center, ra, dec)
            xi += list(a)
            eta += list(b)
    m = margin / 3600.0
    lo_x, hi_x, lo_y, hi_y = min(xi) - m, max(xi) + m, min(eta) - m, max(eta) + m
    mid = tan_deproject(*center, (lo_x + hi_x) / 2, (lo_y + hi_y) / 2)
    return (float(mid[0]), float(mid[1])), ((hi_x - lo_x) / 2, (hi_y - lo_y) / 2)


def _truth_rows(plan: ExposurePlan, flag_crs: bool):
    row = {"file": plan.filename, "rootname": plan.rootname, "instrument": plan.det.instrument,
           "detector": plan.det.name, "filter": plan.filter.filter,
           "filter_key": plan.filter.key, "aperture": plan.aperture.name,
           "subarray": bool(plan.aperture.subarray), "proposid": plan.proposid,
           "visit": plan.rootname[:6], "expstart": plan.expstart, "epoch": plan.epoch,
           "exptime": plan.exptime, "ra": plan.pointing[0], "dec": plan.pointing[1],
           "pa": plan.pointing[2], "offset_dx": plan.error[0], "offset_dy": plan.error[1],
           "rotation": plan.error[2], "error_ra": plan.error_ref[0],
           "error_dec": plan.error_ref[1], "cr_flagged": bool(flag_crs and plan.det.ccd)}
    chips = []
    for extver, chip in enumerate(plan.ccdchips, start=1):
        x0, y0, nx, ny = plan.region(chip)
        _, crpix = template_linear_wcs(plan.det, chip)
        t, h = plan.true_chips[chip], plan.header_chips[chip]
        chips.append({
            "file": plan.filename, "extver": extver, "ccdchip": chip,
            "crpix1": crpix[0] - x0, "crpix2": crpix[1] - y0,
            "crval1": t.crval[0], "crval2": t.crval[1], "cd1_1": t.cd[0, 0],
            "cd1_2": t.cd[0, 1], "cd2_1": t.cd[1, 0], "cd2_2": t.cd[1, 1],
            "hdr_crval1": h.crval[0], "hdr_crval2": h.crval[1], "hdr_cd1_1": h.cd[0, 0],
            "hdr_cd1_2": h.cd[0, 1], "hdr_cd2_1": h.cd[1, 0], "hdr_cd2_2": h.cd[1, 1],
            "x0": x0, "y0": y0, "naxis1": nx, "naxis2": ny})
    return row, chips


def _write_exposure(plan: ExposurePlan, preset: Preset, seed: int, out: Path,
                    sources: Table | None) -> tuple[list[Path], list[dict], list[dict]]:
    """Render (or, without ``sources``, only describe) one exposure and write its file(s).

    Returns the paths written and their truth rows (exposures, chips). Everything random
    comes from the exposure's own stream (``[seed, _EXPOSURE, plan.index]``), so exposures
    can be made in any order, in any process.
    """
    if sources is None:  # headers only: flat sky at the filter's level, its noise
        sky = preset.sky_rates.get(plan.filter.key, SKY_RATES.get(plan.filter.key, 0.0))
        counts = sky * plan.exptime
        err = float(np.sqrt(counts + _readnoise(plan.det, plan.ccdchips[0])[0] ** 2))
        values = ((counts, err) if not plan.det.rate_units
                  else (counts / plan.exptime, err / plan.exptime))
        values = tuple(float(np.float32(v)) for v in values)
        hdus = {plan.suffix: make_header_hdulist(plan, *values)}
        if preset.write_flt and plan.suffix == "flc":
            hdus["flt"] = make_header_hdulist(dataclasses.replace(plan, suffix="flt"), *values)
    else:
        rng = np.random.default_rng([seed, _EXPOSURE, plan.index])
        ra, dec = positions_at(sources, plan.epoch)
        rates = np.asarray(sources[f"rate_{plan.filter.key}"])
        sky = preset.sky_rates.get(plan.filter.key, SKY_RATES.get(plan.filter.key, 0.0))
        psf = load_psf(plan.filter.psf)
        images = {}
        for chip in plan.ccdchips:
            region = plan.region(chip)
            setup = ChipSetup(
                det=plan.det, ccdchip=chip, region=region,
                wcs=full_chip_wcs(plan.det, chip, plan.true_chips[chip], *region),
                exptime=plan.exptime, psf=psf, sky_rate=sky,
                readnoise=_readnoise(plan.det, chip), flag_crs=preset.flag_crs,
                seed=seed, nsamp=plan.nsamp, cosmic_rays=preset.cosmic_rays,
                render=preset.render)
            images[chip] = render_chip(setup, sources, ra, dec, rates, rng)
        hdus = {plan.suffix: make_hdulist(plan, images)}
        if preset.write_flt and plan.suffix == "flc":
            hdus["flt"] = make_hdulist(dataclasses.replace(plan, suffix="flt"), images)
    paths, exp_rows, chip_rows = [], [], []
    for suffix, hdul in hdus.items():
        which = dataclasses.replace(plan, suffix=suffix)
        path = out / which.filename
        hdul.writeto(path, overwrite=True)
        paths.append(path)
        row, chips = _truth_rows(which, preset.flag_crs)
        exp_rows.append(row)
        chip_rows += chips
    log.info("wrote %s (%s/%s %s %s, %.0f s)", paths[-1].name, plan.det.instrument,
             plan.det.name, plan.filter.filter, plan.aperture.name, plan.exptime)
    return paths, exp_rows, chip_rows


_JOB: dict = {}
"""The shared arguments of :func:`_pool_write` in a worker process (set by its initializer)."""


def _pool_init(preset: Preset, seed: int, out: Path, sources: Table | None) -> None:
    _JOB.update(preset=preset, seed=seed, out=out, sources=sources)


def _pool_write(plan: ExposurePlan):
    return _write_exposure(plan, _JOB["preset"], _JOB["seed"], _JOB["out"], _JOB["sources"])


def _write_all(plans: list[ExposurePlan], preset: Preset, seed: int, out: Path,
               sources: Table | None, workers: int):
    """Write every exposure, in ``workers`` processes; results in plan order."""
    if workers <= 1 or len(plans) <= 1:
        return [_write_exposure(p, preset, seed, out, sources) for p in plans]
    with _pool(min(workers, len(plans)), _pool_init, (preset, seed, out, sources)) as pool:
        return list(pool.map(_pool_write, plans))


def _pool(workers: int, initializer=None, initargs=()):
    """A process pool; forked where possible, so the workers start with the caches
    (templates, PSFs, pixel-area maps) already loaded."""
    from mvmflow.runner import fork_pool

    return fork_pool(workers, initializer, initargs)


def simulate(preset: str | Preset, out: str | Path, seed: int | None = None, *,
             headers_only: bool = False, workers: int = 1) -> SimulationResult:
    """Write a simulated data set: exposures in ``out/``, truth in ``out/truth/``.

    Parameters
    ----------
    preset : str or Preset
        A name in :data:`mvmflow.simulate.PRESETS` or a :class:`Preset`.
    out : path
        Output directory (created if needed; existing files of the same names are replaced).
    seed : int, optional
        Random seed (default: the preset's). The same preset and seed give bit-identical files.
    headers_only : bool
        Write the exposures without pixels: every ``SCI``/``ERR``/``DQ`` (and IR
        ``SAMP``/``TIME``) extension is an HST constant-value extension (``NAXIS = 0``,
        ``NPIX1``/``NPIX2`` = the array's shape, ``PIXVALUE``; see
        :func:`~mvmflow.simulate.exposure.make_header_hdulist`), with the same headers (WCS,
        distortion tables, keywords) as the full files of the same preset and seed, except
        the pixel statistics. No sources are drawn; the truth is ``exposures`` and ``chips``.
    workers : int
        Processes that render and write exposures (each exposure has its own random stream,
        so the files are the same for any number).
    """
    preset = get_preset(preset)
    seed = preset.seed if seed is None else int(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    plans = plan_exposures(preset, seed, workers=int(workers))
    result = SimulationResult(preset=preset.name, seed=seed, out=out)
    sources = refcat = None
    if not headers_only:
        center = (preset.ra, preset.dec)
        field_center, half = _field(plans, center, preset.scene.margin_arcsec)
        sources = make_sources(preset.scene, field_center, half,
                               np.random.default_rng([seed, _SCENE]))
        infos = sorted({p.filter.key: p.filter for p in plans}.values(), key=lambda i: i.key)
        add_filter_columns(sources, infos)
        sources.meta.update({"preset": preset.name, "seed": seed,
                             "reference_epoch": REFERENCE_EPOCH,
                             "flux_convention": "rate_* = true count rate in e-/s (total "
                             "charge of a source = rate * EXPTIME); magnitudes are ST"})
        refcat = make_refcat(sources, np.random.default_rng([seed, _REFCAT]))
        refcat.meta.update({"preset": preset.name, "seed": seed,
                            "description": "Gaia-DR3-like reference catalogue at epoch 2016.0"})

    exp_rows, chip_rows = [], []
    for paths, rows, chips in _write_all(plans, preset, seed, out, sources, int(workers)):
        result.exposures += paths
        exp_rows += rows
        chip_rows += chips

    truth = out / "truth"
    exposures = Table(rows=exp_rows)
    exposures.meta.update({"preset": preset.name, "seed": seed,
                           "cosmic_rays": bool(preset.cosmic_rays),
                           "pointing_error": "header WCS = true WCS moved by (offset_dx, "
                           "offset_dy) arcsec east/north and rotated by `rotation` deg about "
                           "(error_ra, error_dec)"})
    _describe(exposures, {
        "expstart": ("d", "EXPSTART (MJD)"), "epoch": ("yr", "Julian year at mid-exposure"),
        "exptime": ("s", None), "ra": ("deg", "true RA of the aperture reference pixel"),
        "dec": ("deg", "true Dec of the aperture reference pixel"),
        "pa": ("deg", "true position angle of the detector's SCI,1 y axis"),
        "offset_dx": ("arcsec", "injected pointing error towards east"),
        "offset_dy": ("arcsec", "injected pointing error towards north"),
        "rotation": ("deg", "injected pointing rotation (position angles increase)"),
        "error_ra": ("deg", "centre of the pointing-error rotation"),
        "error_dec": ("deg", "centre of the pointing-error rotation"),
        "cr_flagged": (None, "cosmic rays flagged 4096 in DQ (CCDs)")})
    chips = Table(rows=chip_rows)
    chips.meta.update({"preset": preset.name, "seed": seed})
    _describe(chips, {
        "crpix1": (None, "CRPIX1 (1-based, this file's pixel frame)"),
        "crval1": ("deg", "true CRVAL1"), "crval2": ("deg", "true CRVAL2"),
        "cd1_1": ("deg", "true CD1_1"), "cd1_2": ("deg", "true CD1_2"),
        "cd2_1": ("deg", "true CD2_1"), "cd2_2": ("deg", "true CD2_2"),
        "hdr_crval1": ("deg", "header CRVAL1"), "hdr_crval2": ("deg", "header CRVAL2"),
        "x0": (None, "first full-chip column of the readout (0-based, = -LTV1)"),
        "y0": (None, "first full-chip row of the readout (0-based, = -LTV2)")})
    if headers_only:
        exposures.meta["headers_only"] = True
        result.truth = {
            "exposures": write_table(exposures, truth / "exposures.ecsv"),
            "chips": write_table(chips, truth / "chips.ecsv"),
        }
    else:
        result.truth = {
            "sources": write_table(sources, truth / "sources.ecsv"),
            "exposures": write_table(exposures, truth / "exposures.ecsv"),
            "chips": write_table(chips, truth / "chips.ecsv"),
            "refcat": write_table(refcat, truth / "refcat.ecsv"),
        }
    log.info("simulated %d exposures of preset %s (seed %d) in %.1f s", len(result.exposures),
             preset.name, seed, time.perf_counter() - start)
    return result


def _describe(table: Table, info: dict) -> None:
    for name, (unit, text) in info.items():
        if name not in table.colnames:
            continue
        if unit is not None:
            table[name].unit = unit
        if text is not None:
            table[name].description = text
