"""Pictures of a run: layer previews, coverage maps, sky-cell footprint maps, report tables.

Every layer gets a PNG preview of its ``SCI`` (a robust asinh stretch between percentiles,
blank where nothing was drizzled) and a coverage map (the number of exposures per pixel, from
the ``CTX`` bits; ``WHT`` for a layer without a context image); every sky cell a map of its
exposures' chip outlines on the sky-cell grid. The Snakemake report (``rules/report.smk``,
docs/design.md "Previews and the report") shows them with the screening and alignment tables
written here.

Memory is bounded on full-size layers (a fine sky cell is up to ~22,000 px a side): a layer
is read in strips of ``factor`` rows (``ImageHDU.section``: only those rows are read from
the file) and each strip is block-averaged into one row of the preview at once, so a job
holds a few strips and the preview, never the array (:func:`read_downsampled`).

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas (no pyplot,
no display, no global state) and written atomically (:func:`mvmflow.workflow.atomic_path`).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

__all__ = ["Thumb", "block_factor", "block_wcs", "read_downsampled", "stretch_limits",
           "write_preview", "write_coverage", "layer_previews", "footprint_map", "table_html",
           "screening_table", "align_table", "layers_table", "PREVIEW_SIZE"]

#: Longest side, in preview pixels, of a layer's preview and coverage map.
PREVIEW_SIZE = 1000
#: Most pixels read at once (a strip of rows): 4 Mpx, 32 MB as float64.
CHUNK_PIXELS = 1 << 22
#: The stretch: asinh between these percentiles of the covered pixels.
PERCENTILES = (0.5, 99.8)
ASINH_A = 0.05
#: The colour of uncovered pixels in a preview.
BLANK = "#c9d3e0"


@dataclass
class Thumb:
    """A layer read downsampled by :func:`read_downsampled`.

    Attributes
    ----------
    name : str
        The layer's file name.
    factor : int
        Layer pixels per preview pixel, along each axis (block size).
    shape : tuple of int
        ``(ny, nx)`` of the layer.
    sci : ndarray
        Block mean of ``SCI`` over covered pixels (``WHT > 0``, finite); NaN where a block
        has none.
    wht : ndarray
        Block mean of ``WHT`` (0 where uncovered).
    nexp : ndarray or None
        Block maximum of the number of exposures per pixel (popcount of ``CTX``), or None
        without a context image.
    wcs : astropy.wcs.WCS or None
        The layer's celestial WCS resampled to the preview's pixels.
    header : dict
        A few primary-header values for titles and tables.
    covered : int
        Layer pixels with ``WHT > 0``.
    """

    name: str
    factor: int
    shape: tuple[int, int]
    sci: np.ndarray
    wht: np.ndarray
    nexp: np.ndarray | None
    wcs: WCS | None
    header: dict = field(default_factory=dict)
    covered: int = 0


def block_factor(shape: Sequence[int], size: int = PREVIEW_SIZE) -> int:
    """The smallest block size that brings ``shape``'s longest side to at most ``size``."""
    return max(1, math.ceil(max(shape) / size))


def _block_sum(strip: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``strip`` (rows, nx) over blocks of ``rows x factor`` pixels: one row out."""
    nx = strip.shape[1]
    pad = (-nx) % factor
    if pad:
        strip = np.pad(strip, ((0, 0), (0, pad)))
    return strip.reshape(strip.shape[0], -1, factor).sum(axis=(0, 2))


def _block_max(strip: np.ndarray, factor: int) -> np.ndarray:
    nx = strip.shape[1]
    pad = (-nx) % factor
    if pad:
        strip = np.pad(strip, ((0, 0), (0, pad)))
    return strip.reshape(strip.shape[0], -1, factor).max(axis=(0, 2))


def _popcount(ctx: np.ndarray) -> np.ndarray:
    """Exposures per pixel: the set bits of a context image ``(ny, nx)`` or
    ``(planes, ny, nx)``."""
    counts = np.bitwise_count(ctx.view(np.uint32)).astype(np.int16)
    return counts.sum(axis=0) if counts.ndim == 3 else counts


HEADER_KEYS = ("INSTRUME", "DETECTOR", "FILTER", "EXPTIME", "NDRIZIM", "NALIGNED", "NUNALIGN",
               "ALNFRAME", "ALNMIXED", "PHOTFLAM", "PHOTPLAM", "BUNIT", "D001SCAL")


def block_wcs(header, factor: int) -> WCS | None:
    """The celestial WCS of ``header`` for pixels of ``factor x factor`` blocks (block
    ``(0, 0)`` covers pixels ``0..factor-1``), or None without one."""
    try:
        wcs = WCS(header, naxis=2)
    except Exception:  # a header without a readable WCS: the preview gets pixel axes
        return None
    if not wcs.has_celestial:
        return None
    wcs.wcs.crpix = (wcs.wcs.crpix - 0.5) / factor + 0.5
    if wcs.wcs.has_cd():
        wcs.wcs.cd = wcs.wcs.cd * factor
    else:
        wcs.wcs.cdelt = wcs.wcs.cdelt * factor
    wcs.pixel_shape = None
    return wcs


def read_downsampled(path: str | os.PathLike, size: int = PREVIEW_SIZE) -> Thumb:
    """Read a layer product block-averaged to at most ``size`` pixels a side.

    Reads ``factor`` rows of ``SCI``, ``WHT`` (and ``CTX``) at a time (fewer when that
    would exceed :data:`CHUNK_PIXELS`), so memory is a few such strips and the
    ``size``-square preview, whatever the layer's size.

    Parameters
    ----------
    path : path
        A ``_dr[cz].fits`` layer (:mod:`mvmflow.products`).
    size : int
        Longest side of the preview.

    Returns
    -------
    Thumb
    """
    path = Path(path)
    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        names = {h.name for h in hdul}
        sci_hdu, wht_hdu = hdul["SCI"], hdul["WHT"]
        ctx_hdu = hdul["CTX"] if "CTX" in names and hdul["CTX"].header.get("NAXIS", 0) else None
        ny, nx = sci_hdu.shape
        factor = block_factor((ny, nx), size)
        out_ny, out_nx = math.ceil(ny / factor), math.ceil(nx / factor)
        sci = np.full((out_ny, out_nx), np.nan, dtype=np.float32)
        wht = np.zeros((out_ny, out_nx), dtype=np.float32)
        nexp = np.zeros((out_ny, out_nx), dtype=np.int16) if ctx_hdu is not None else None
        covered = 0
        # rows read at once: a block row, or fewer on a very wide layer (a mosaic), so a read
        # holds at most CHUNK_PIXELS pixels
        step = max(1, min(factor, CHUNK_PIXELS // nx))
        cells = _block_sum(np.ones((1, nx)), factor)  # pixels per block in one row
        for row, y0 in enumerate(range(0, ny, factor)):
            y1 = min(ny, y0 + factor)
            n, total, wsum = (np.zeros(out_nx) for _ in range(3))
            for a in range(y0, y1, step):
                b = min(y1, a + step)
                s = np.asarray(sci_hdu.section[a:b, :], dtype=np.float64)
                w = np.asarray(wht_hdu.section[a:b, :], dtype=np.float64)
                valid = (w > 0) & np.isfinite(s)
                covered += int(np.count_nonzero(w > 0))
                n += _block_sum(valid.astype(np.float64), factor)
                total += _block_sum(np.where(valid, s, 0.0), factor)
                wsum += _block_sum(np.where(w > 0, w, 0.0), factor)
                if ctx_hdu is not None:
                    ctx = np.asarray(ctx_hdu.section[..., a:b, :])
                    nexp[row] = np.maximum(nexp[row], _block_max(_popcount(ctx), factor))
            with np.errstate(invalid="ignore", divide="ignore"):
                sci[row] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
            wht[row] = wsum / (cells * (y1 - y0))
        header = {k: hdul[0].header[k] for k in HEADER_KEYS if k in hdul[0].header}
        header.update({k: sci_hdu.header[k] for k in ("BUNIT",) if k in sci_hdu.header})
        wcs = block_wcs(sci_hdu.header, factor)
    if nexp is not None and not nexp.any() and covered:  # an empty context image
        nexp = None
    return Thumb(path.name, factor, (ny, nx), sci, wht, nexp, wcs, header, covered)


def _figure(thumb_shape, wcs):
    """A Figure (Agg) with one image axes, in RA/Dec when ``wcs`` is given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ny, nx = thumb_shape
    aspect = ny / max(nx, 1)
    height = max(3.0, min(12.0, 7.0 * aspect + 1.5))
    # margins by hand: constrained layout draws the figure twice (0.12 s of a 1 s job)
    fig = Figure(figsize=(8.5, height), dpi=100)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.8 / height, top=1 - 0.75 / height)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection=wcs) if wcs is not None else fig.add_subplot()
    if wcs is not None:
        ax.coords[0].set_axislabel("RA")
        ax.coords[1].set_axislabel("Dec")
        ax.coords[0].set_major_formatter("hh:mm:ss.s")
        ax.coords[1].set_major_formatter("dd:mm:ss")
    return fig, ax


def _save(fig, path: str | os.PathLike) -> Path:
    from mvmflow.workflow import atomic_path

    with atomic_path(path) as tmp:
        # no date or software-version card: the same layer gives the same bytes
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return Path(path)


def _subtitle(thumb: Thumb) -> str:
    h = thumb.header
    parts = []
    if "NDRIZIM" in h:
        parts.append(f"{h['NDRIZIM']} input chips")
    if "EXPTIME" in h:
        parts.append(f"{float(h['EXPTIME']):g} s")
    parts.append(f"{thumb.shape[1]} x {thumb.shape[0]} px, shown in {thumb.factor}x"
                 f"{thumb.factor} blocks")
    return ", ".join(parts)


def stretch_limits(data: np.ndarray, percentiles: tuple[float, float] = PERCENTILES):
    """``(vmin, vmax)`` of the finite values of ``data`` at ``percentiles`` (0, 1 if none)."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, percentiles)
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def write_preview(thumb: Thumb, path: str | os.PathLike) -> Path:
    """The layer's ``SCI`` as a PNG: asinh stretch between :data:`PERCENTILES` of the covered
    blocks, uncovered blocks in :data:`BLANK` (light blue-grey)."""
    import matplotlib
    from astropy.visualization import AsinhStretch, ImageNormalize, ManualInterval

    vmin, vmax = stretch_limits(thumb.sci)
    # not clip=True: astropy's clipping fills the mask of uncovered pixels (drawn white);
    # the colour map's ends draw values beyond the limits
    norm = ImageNormalize(interval=ManualInterval(vmin, vmax), stretch=AsinhStretch(ASINH_A),
                          clip=False, invalid=None)
    cmap = matplotlib.colormaps["gray"].with_extremes(bad=BLANK)
    fig, ax = _figure(thumb.sci.shape, thumb.wcs)
    ax.set_facecolor(BLANK)  # matplotlib may draw masked pixels transparent
    im = ax.imshow(thumb.sci, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label=thumb.header.get("BUNIT", "SCI"))
    ax.set_title(f"{thumb.name}\n{_subtitle(thumb)}", fontsize=9)
    return _save(fig, path)


def write_coverage(thumb: Thumb, path: str | os.PathLike) -> Path:
    """The layer's coverage as a PNG: exposures per pixel (block maximum of the ``CTX``
    popcount), or the block-mean ``WHT`` for a layer without a context image."""
    import matplotlib

    fig, ax = _figure(thumb.wht.shape, thumb.wcs)
    if thumb.nexp is not None:
        top = max(1, int(thumb.nexp.max()))
        cmap = matplotlib.colormaps["viridis"].resampled(top).with_extremes(under="white",
                                                                            bad="white")
        data = np.where(thumb.nexp > 0, thumb.nexp, np.nan).astype(np.float32)
        im = ax.imshow(data, origin="lower", cmap=cmap, vmin=0.5, vmax=top + 0.5,
                       interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label="exposures per pixel",
                     ticks=range(1, top + 1) if top <= 12 else None)
    else:
        data = np.where(thumb.wht > 0, thumb.wht, np.nan)
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
        im = ax.imshow(data, origin="lower", cmap=cmap, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label="WHT (block mean)")
    frac = thumb.covered / max(1, thumb.shape[0] * thumb.shape[1])
    ax.set_title(f"{thumb.name}: coverage\n{frac:.1%} of the layer's pixels covered", fontsize=9)
    return _save(fig, path)


def layer_previews(product: str | os.PathLike, preview: str | os.PathLike,
                   coverage: str | os.PathLike, size: int = PREVIEW_SIZE) -> dict:
    """Write a layer's preview and coverage map; return its statistics.

    Parameters
    ----------
    product : path
        The layer product.
    preview, coverage : path
        The PNG files to write.
    size : int
        Longest side of the previews, in preview pixels.

    Returns
    -------
    dict
        ``layer``, ``nx``, ``ny``, ``factor``, ``covered`` (fraction of pixels with
        ``WHT > 0``), ``max_exposures``, ``vmin``/``vmax`` of the stretch, and the header
        values of :data:`HEADER_KEYS`.
    """
    thumb = read_downsampled(product, size)
    write_preview(thumb, preview)
    write_coverage(thumb, coverage)
    vmin, vmax = stretch_limits(thumb.sci)
    stats = {"layer": thumb.name, "nx": thumb.shape[1], "ny": thumb.shape[0],
             "factor": thumb.factor,
             "covered": round(thumb.covered / max(1, thumb.shape[0] * thumb.shape[1]), 6),
             "max_exposures": int(thumb.nexp.max()) if thumb.nexp is not None else None,
             "vmin": vmin, "vmax": vmax}
    stats.update({k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                  for k, v in thumb.header.items()})
    return stats


# ---- footprint map of a sky cell


def footprint_map(skycell: str, records: Iterable, path: str | os.PathLike,
                  frames: dict | None = None) -> Path:
    """Draw the chip outlines of a sky cell's exposures on the sky-cell grid.

    Parameters
    ----------
    skycell : str
        ``skycell-pPPPPxXXyYY``.
    records : iterable of ExposureRecord
        The exposures (aligned records where there are: their outlines are through the
        aligned WCS).
    path : path
        The PNG to write.
    frames : dict, optional
        ``{scale: Frame}`` of the layers' trimmed frames, drawn dashed.

    Returns
    -------
    Path
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Polygon, Rectangle

    from mvmflow.grid import SkyCell

    frame = SkyCell.from_name(skycell).frame
    wcs = frame.wcs
    records = list(records)
    keys = sorted({_detector_filter(r) for r in records})
    colors = matplotlib.colormaps["tab10"]
    color = {k: colors(i % 10) for i, k in enumerate(keys)}
    outlines = []  # (key, x, y) in sky-cell pixels
    for rec in records:
        for chip in rec.chips:
            xy = np.array(chip.footprint, dtype=float)
            if xy.size:
                px, py = wcs.wcs_world2pix(xy[:, 0], xy[:, 1], 0)
                outlines.append((_detector_filter(rec), px, py))
    trimmed = [f for f in (frames or {}).values()
               if f.scale == frame.scale and f.projection_cell == frame.projection_cell]

    # constrained layout collapses two WCSAxes side by side: placed by hand
    fig = Figure(figsize=(14, 7.0), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.09, top=0.94, wspace=0.28)
    FigureCanvasAgg(fig)
    panels = [fig.add_subplot(1, 2, i + 1, projection=wcs) for i in range(2)]
    for ax in panels:
        ax.coords[0].set_axislabel("RA")
        ax.coords[1].set_axislabel("Dec")
        ax.coords[0].set_major_formatter("hh:mm:ss")
        ax.coords[1].set_major_formatter("dd:mm:ss")
        ax.add_patch(Rectangle((-0.5, -0.5), frame.nx, frame.ny, fill=False, lw=1.5,
                               ec="black"))
        for f in trimmed:  # the coarse layers' frame covers the same sky: the fine one
            x0, y0 = frame.offset_of(f)
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), f.nx, f.ny, fill=False, ls="--",
                                   lw=1, ec="grey"))
        for key, px, py in outlines:
            ax.add_patch(Polygon(np.column_stack([px, py]), closed=True,
                                 fc=(*color[key][:3], 0.08), ec=color[key], lw=0.8))
        ax.set_aspect("equal")
    # left: the whole sky cell; right: the exposures (and the layers' frame), close up
    full, zoom = panels
    pad = 0.03 * max(frame.nx, frame.ny)
    allx = [-0.5, frame.nx - 0.5] + [v for _, px, _ in outlines for v in (px.min(), px.max())]
    ally = [-0.5, frame.ny - 0.5] + [v for _, _, py in outlines for v in (py.min(), py.max())]
    full.set_xlim(min(allx) - pad, max(allx) + pad)
    full.set_ylim(min(ally) - pad, max(ally) + pad)
    full.set_title(f"{skycell}: the sky cell (solid), the layers' frame (dashed)", fontsize=9)
    zx = [v for _, px, _ in outlines for v in (px.min(), px.max())]
    zy = [v for _, _, py in outlines for v in (py.min(), py.max())]
    for f in trimmed:
        x0, y0 = frame.offset_of(f)
        zx += [x0 - 0.5, x0 + f.nx - 0.5]
        zy += [y0 - 0.5, y0 + f.ny - 0.5]
    if zx:
        half = 0.55 * max(max(zx) - min(zx), max(zy) - min(zy), 10)
        cx, cy = (max(zx) + min(zx)) / 2, (max(zy) + min(zy)) / 2
        zoom.set_xlim(cx - half, cx + half)
        zoom.set_ylim(cy - half, cy + half)
    zoom.set_title(f"{len(records)} exposures, {len(outlines)} chips: close up", fontsize=9)
    if keys:
        handles = [Patch(fc=(*color[k][:3], 0.08), ec=color[k], label=k) for k in keys]
        zoom.legend(handles=handles, loc="best", fontsize=8, framealpha=0.85)
    return _save(fig, path)


def _detector_filter(record) -> str:
    """``WFC3/IR F110W``: a record's detector and filter, the footprint map's colour key."""
    return f"{record.instrument}/{record.detector} {record.filter}".upper()


# ---- tables for the report


def table_html(rows: Sequence[dict], columns: Sequence[str], title: str,
               note: str = "") -> str:
    """A small self-contained HTML page holding one table (values escaped)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in columns)
        + "</tr>" for r in rows)
    style = ("body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
             "th{background:#eef}tr:nth-child(even){background:#f8f8f8}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n<h3>{html.escape(title)}</h3>\n"
            + (f"<p>{html.escape(note)}</p>\n" if note else "")
            + f"<table>\n<tr>{head}</tr>\n{body}\n</table>\n</body></html>\n")


def _fmt(value) -> str:
    if value is np.ma.masked:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, np.floating):
        return _fmt(float(value))
    return str(value)


def _write_text(path: str | os.PathLike, text: str) -> Path:
    from mvmflow.workflow import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def _rows(table) -> list[dict]:
    return [{c: row[c] for c in table.colnames} for row in table]


#: The screening table's columns (the reports' other columns - checksums, sizes, paths -
#: stay in the ECSV files).
SCREEN_COLUMNS = ("status", "file", "reason", "instrument", "detector", "filter", "ptype",
                  "exptime", "date_obs", "proposid", "warnings")


def screening_table(accepted: str | os.PathLike, rejected: str | os.PathLike,
                    path: str | os.PathLike) -> Path:
    """One HTML table of every input: accepted or rejected, and why (from the screening
    reports ``accepted.ecsv`` and ``rejected.ecsv``)."""
    from astropy.table import Table

    acc, rej = Table.read(accepted, format="ascii.ecsv"), Table.read(rejected, format="ascii.ecsv")
    rows = [{"status": "rejected", **row} for row in _rows(rej)]
    rows += [{"status": "accepted", **row} for row in _rows(acc)]
    for row in rows:
        row["file"] = Path(str(row.get("file", ""))).name
    columns = [c for c in SCREEN_COLUMNS if c in acc.colnames + rej.colnames + ["status"]]
    note = f"{len(acc)} accepted, {len(rej)} rejected (rejected first)."
    return _write_text(path, table_html(rows, columns, "Screening of the inputs", note))


def align_table(report: str | os.PathLike, path: str | os.PathLike, skycell: str = "") -> Path:
    """A sky cell's alignment results (``<skycell>_align.ecsv``) as an HTML table."""
    from astropy.table import Table

    table = Table.read(report, format="ascii.ecsv")
    title = f"Alignment of the exposures of {skycell}" if skycell else "Alignment"
    return _write_text(path, table_html(_rows(table), table.colnames, title,
                                        f"{len(table)} exposures."))


LAYER_COLUMNS = ("layer", "nx", "ny", "covered", "max_exposures", "EXPTIME", "NDRIZIM",
                 "NALIGNED", "NUNALIGN", "ALNFRAME", "vmin", "vmax")


def layers_table(stats: Iterable[dict], path: str | os.PathLike, title: str = "Layers") -> Path:
    """The layers' statistics (:func:`layer_previews`) as an HTML table."""
    rows = list(stats)
    columns = [c for c in LAYER_COLUMNS if any(c in r for r in rows)]
    return _write_text(path, table_html(rows, columns, title,
                                        f"{len(rows)} layers; covered: fraction of the "
                                        "layer's pixels with WHT > 0; vmin/vmax: the "
                                        "preview's stretch."))
