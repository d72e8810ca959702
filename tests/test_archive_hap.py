"""mvmflow.archive.hap against the local MAST server: the archive's MVM products of a box,
their retrieval, MAST's HAP cutouts, and cutting the retrieved products ourselves."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from mastserver import DATA_DIR, mast_server  # noqa: F401 - the fixture
from test_cutouts import DEC as CUT_DEC
from test_cutouts import RA as CUT_RA
from test_cutouts import write_product

from mvmflow.archive import hap
from mvmflow.cli import main
from mvmflow.names import CutoutName, LayerName

RA0, DEC0 = 84.9207, -69.8516  # the spec's verified query example
COS = math.cos(math.radians(DEC0))
PRODUCT_FIELDS = json.loads((DATA_DIR / "products.json").read_text())["fields"]
COLUMNS = [f["name"] for f in PRODUCT_FIELDS if f["name"] != "_selected_"]
OBS_FIELDS = [{"name": n, "type": t} for n, t in (
    ("dataproduct_type", "string"), ("obs_collection", "string"), ("instrument_name", "string"),
    ("project", "string"), ("filters", "string"), ("target_name", "string"),
    ("obs_id", "string"), ("s_ra", "float"), ("s_dec", "float"), ("obsid", "string"))]


def _obs(obsid, obs_id, dra_sky=0.0, ddec=0.0, instrument="WFC3/IR", project="HAP"):
    """An observation whose centre is ``dra_sky`` (on the sky) and ``ddec`` arcsec away."""
    return {"dataproduct_type": "image", "obs_collection": "HST", "instrument_name": instrument,
            "project": project, "filters": "F160W", "target_name": "ANY", "obs_id": obs_id,
            "s_ra": RA0 + dra_sky / 3600.0 / COS, "s_dec": DEC0 + ddec / 3600.0,
            "obsid": str(obsid)}


#: name -> observation; the box of 100" keeps exactly the ``in`` ones.
OBSERVATIONS = {
    "centre": (_obs(1, "hst_skycell-p0081x14y14_wfc3_ir_f160w"), True),
    "ra_just_inside": (_obs(2, "hst_skycell-p0081x15y14_wfc3_ir_f160w", dra_sky=49.5), True),
    "ra_just_outside": (_obs(3, "hst_skycell-p0081x16y14_wfc3_ir_f160w", dra_sky=50.5), False),
    # inside on the sky, but 126" of RA: the reference (no cos dec, full size) drops it
    "needs_cos_dec": (_obs(4, "hst_skycell-p0081x13y14_acs_wfc_f814w", dra_sky=-45.0,
                           instrument="ACS/WFC"), True),
    # 60" in Dec: inside the reference's full-size box, outside the half-size one
    "dec_outside": (_obs(5, "hst_skycell-p0081x14y15_wfc3_ir_f160w", ddec=60.0), False),
    "not_a_skycell": (_obs(6, "ib2v01010", ddec=5.0), False),
    "not_hap": (_obs(7, "hst_skycell-p0081x14y13_wfc3_ir_f160w", ddec=-5.0, project="HST"),
                False),
}


def _layer_bytes(tmp_path: Path, name: str) -> bytes:
    path = tmp_path / "made" / name
    path.parent.mkdir(exist_ok=True)
    write_product(path)
    return path.read_bytes()


class Archive:
    """The simulated archive: sky-cell observations, their products, the HAP cutout service."""

    def __init__(self, server, tmp_path):
        self.server = server
        self.products: dict[str, list[dict]] = {}
        self.layers: dict[str, bytes] = {}
        made = tmp_path / "made"
        made.mkdir()
        for key, (obs, _) in OBSERVATIONS.items():
            cell = obs["obs_id"]
            rows = []
            if cell.startswith("hst_skycell"):
                inst = "wfc3_ir_f160w" if "wfc3" in cell else "acs_wfc_f814w"
                ptype = "drz" if "wfc3" in cell else "drc"
                skycell = cell.split("_")[1]
                names = [f"hst_{skycell}_{inst}_all_{ptype}.fits",
                         f"hst_{skycell}_{inst}_all_{ptype}.png",  # not FITS: dropped
                         f"hst_{skycell}_{inst}_all_trl.txt"]  # not DRZ/DRC: dropped
                if key == "centre":  # the same file under two observations: listed once
                    names.append("hst_skycell-p0081x15y14_wfc3_ir_f160w_all_drz.fits")
            else:
                names = ["ib2v01abq_drz.fits"]  # a DRZ, but not of a sky cell: dropped
            for name in names:
                if name.endswith(".fits") and name.startswith("hst_"):
                    data = self.layers.get(name) or self._product_bytes(made, name)
                    self.layers[name] = data
                else:
                    data = b"not a layer"
                uri = f"mast:HST/product/{name}"
                server.add_file(uri, data)
                group = name.rsplit("_", 1)[1].split(".")[0].upper()
                rows.append({"obsID": obs["obsid"], "obs_collection": "HST",
                             "dataproduct_type": "image",
                             "obs_id": cell if name.startswith("hst_") else "ib2v01abq",
                             "description": f"{group} product", "type": "S", "dataURI": uri,
                             "productType": "SCIENCE", "productGroupDescription": None,
                             "productSubGroupDescription": group,
                             "productDocumentationURL": None, "project": "HAP",
                             "prvversion": "3.7.1", "productFilename": name,
                             "size": len(data), "_selected_": None})
            self.products[obs["obsid"]] = rows
        server.add_service("Mast.Caom.Filtered.Position", self.observations)
        server.add_service("Mast.Caom.Products", self.product_list)

    @staticmethod
    def _product_bytes(made: Path, name: str) -> bytes:
        """A small layer product of the cutout tests' sky cell, named as the archive does;
        the archive's own MVM files have this layout (SCI, WHT; ROOTNAME, FILENAME)."""
        layer = LayerName.parse(name)
        fine = f"hst_skycell-p0081x14y14_wfc3_ir_{layer.filter}_all_drz.fits"
        path = made / fine
        if path.exists():
            path.unlink()
        write_product(path)
        with fits.open(path) as hdul:
            hdul[0].header.update(FILENAME=name, ROOTNAME=layer.rootname,
                                  INSTRUME=layer.instrument.upper(),
                                  DETECTOR=layer.detector.upper(), FILTER=layer.filter.upper(),
                                  SCELLID=layer.skycell[8:])
            buffer = io.BytesIO()
            hdul.writeto(buffer)
        return buffer.getvalue()

    @staticmethod
    def observations(params):
        ra, dec, radius = (float(v) for v in params["position"].split(","))
        conditions = {f["paramName"]: f for f in params["filters"]}
        rows = []
        for obs, _ in OBSERVATIONS.values():
            cosd = math.cos(math.radians(dec))
            dist = math.hypot((obs["s_ra"] - ra) * cosd, obs["s_dec"] - dec)
            if dist > radius:
                continue
            ok = True
            for name, cond in conditions.items():
                value = str(obs[name]).lower()
                if "freeText" in cond:
                    ok &= value.startswith(cond["freeText"].rstrip("%").lower())
                else:
                    ok &= value in [str(v).lower() for v in cond["values"]]
            if ok:
                rows.append(obs)
        return OBS_FIELDS, rows

    def product_list(self, params):
        rows = [r for obsid in params["obsid"].split(",") for r in self.products.get(obsid, [])]
        return PRODUCT_FIELDS, rows


@pytest.fixture
def archive(mast_server, tmp_path):  # noqa: F811 - the fixture
    return Archive(mast_server, tmp_path)


KEPT = sorted({"hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits",
               "hst_skycell-p0081x15y14_wfc3_ir_f160w_all_drz.fits",
               "hst_skycell-p0081x13y14_acs_wfc_f814w_all_drc.fits"})


# -- query-products -------------------------------------------------------------------------

def test_query_products_name_columns_and_box(archive, tmp_path):
    server = archive.server
    table = hap.query_products(RA0, DEC0, 100, url=server.url, out_dir=tmp_path / "q")
    path = tmp_path / "q" / "mvm_query-ra84d9207-decs69d8516_71_cutout.ecsv"
    assert [p.name for p in (tmp_path / "q").iterdir()] == [path.name]
    assert sorted(table["productFilename"]) == KEPT
    written = Table.read(path, format="ascii.ecsv")
    assert written.colnames == COLUMNS  # astroquery's product list, as the reference writes
    assert sorted(written["productFilename"]) == KEPT
    # the two instrument queries of the reference, with its criteria and radius
    invokes = [r.mashup for r in server.requests if r.path == "/api/v0/invoke"]
    queries = [m["params"] for m in invokes if m["service"] == "Mast.Caom.Filtered.Position"]
    assert [next(f["freeText"] for f in q["filters"] if f["paramName"] == "instrument_name")
            for q in queries] == ["ACS%", "WFC3%"]
    for q in queries:
        given = {f["paramName"]: f.get("values") for f in q["filters"]}
        assert given["project"] == ["HAP"] and given["obs_collection"] == ["HST"]
        assert given["dataproduct_type"] == ["IMAGE"]
        ra, dec, radius = (float(v) for v in q["position"].split(","))
        assert (ra, dec) == pytest.approx((RA0, DEC0)) and radius == pytest.approx(71 / 3600)
    # only the observations in the box had their products asked for
    asked = [m["params"]["obsid"] for m in invokes if m["service"] == "Mast.Caom.Products"]
    assert sorted(asked[0].split(",")) == ["1", "2", "4"]


def test_box_is_half_size_with_cos_dec():
    ras = [RA0, RA0 + 49.5 / 3600 / COS, RA0 + 50.5 / 3600 / COS, RA0 - 45 / 3600 / COS, RA0]
    decs = [DEC0, DEC0, DEC0, DEC0, DEC0 + 60 / 3600]
    assert list(hap.in_box(ras, decs, RA0, DEC0, 100)) == [True, True, False, True, False]
    # (w, h): w along RA
    assert list(hap.in_box(ras, decs, RA0, DEC0, (100, 130))) == [True, True, False, True, True]
    # RA wraps at 0/360
    assert list(hap.in_box([359.999, 0.001, 0.01], [0, 0, 0], 0.0, 0.0, 10)) == [True, True,
                                                                                  False]


@pytest.mark.parametrize("size, name", [
    (100 * u.arcsec, "mvm_query-ra84d9207-decs69d8516_71_cutout.ecsv"),  # reference: IndexError
    (500, "mvm_query-ra84d9207-decs69d8516_354_cutout.ecsv"),  # the spec's example
    ([30, 40], "mvm_query-ra84d9207-decs69d8516_25_cutout.ecsv"),
])
def test_scalar_quantity_and_name_rule(archive, tmp_path, size, name):
    table = hap.query_products(RA0, DEC0, size, url=archive.server.url, out_dir=tmp_path)
    assert (tmp_path / name).is_file()
    assert len(table) > 0


def test_nothing_found_writes_nothing(archive, tmp_path):
    table = hap.query_products(10.0, 10.0, 100, url=archive.server.url, out_dir=tmp_path / "q")
    assert len(table) == 0 and not (tmp_path / "q").exists()


def test_query_error_names_the_url(archive, tmp_path):
    archive.server.add_fault("/api/v0/invoke", "404")
    with pytest.raises(hap.ArchiveError, match=r"archive query for mvm_query-.*404"):
        hap.query_products(RA0, DEC0, 100, url=archive.server.url, out_dir=tmp_path)


# -- retrieve -------------------------------------------------------------------------------

def _table(archive, tmp_path) -> Path:
    hap.query_products(RA0, DEC0, 100, url=archive.server.url, out_dir=tmp_path)
    return tmp_path / "mvm_query-ra84d9207-decs69d8516_71_cutout.ecsv"


def test_retrieve_twice_and_all_local(archive, tmp_path):
    server = archive.server
    table = _table(archive, tmp_path)
    dest = tmp_path / "data"
    got = hap.retrieve(table, dest, url=server.url)
    assert sorted(p.name for p in got) == KEPT
    assert server.count("/api/v0.1/Download/file") == 3
    for p in got:
        assert p.read_bytes() == archive.layers[p.name]
    assert sorted(p.name for p in dest.iterdir()) == KEPT  # no mastDownload/, no parts
    server.reset_requests()
    again = hap.retrieve(table, dest, url=server.url)  # the reference: UnboundLocalError
    assert again == got and server.count() == 0


def test_retrieve_never_clobbers_unless_asked(archive, tmp_path):
    server = archive.server
    table = _table(archive, tmp_path)
    dest = tmp_path / "data"
    dest.mkdir()
    mine = dest / KEPT[0]
    mine.write_bytes(b"my own edited copy")
    server.reset_requests()
    got = hap.retrieve(table, dest, url=server.url)
    assert mine in got and mine.read_bytes() == b"my own edited copy"
    assert server.count("/api/v0.1/Download/file") == 2
    server.reset_requests()
    hap.retrieve(table, dest, clobber=True, url=server.url)
    assert mine.read_bytes() == archive.layers[mine.name]
    assert server.count("/api/v0.1/Download/file") == 3
    assert sorted(p.name for p in dest.iterdir()) == KEPT


def test_retrieve_failure_names_the_file_and_the_rest_arrive(archive, tmp_path):
    server = archive.server
    table = _table(archive, tmp_path)
    server.add_fault(f"mast:HST/product/{KEPT[1]}", "404")
    with pytest.raises(hap.ArchiveError, match=rf"1 of 3 files not retrieved: {KEPT[1]}: "
                                               r"not found \(HTTP 404\)") as info:
        hap.retrieve(table, tmp_path / "data", url=server.url)
    assert sorted(p.name for p in info.value.done) == [KEPT[0], KEPT[2]]
    assert not (tmp_path / "data" / KEPT[1]).exists()


def test_cli_query_products_and_retrieve(archive, tmp_path, capsys):
    url = archive.server.url
    assert main(["query-products", "--ra", str(RA0), "--dec", str(DEC0), "--size", "100",
                 "-o", str(tmp_path), "--mast-url", url]) == 0
    table = tmp_path / "mvm_query-ra84d9207-decs69d8516_71_cutout.ecsv"
    assert capsys.readouterr().out.strip() == str(table)
    assert main(["retrieve", str(table), "-o", str(tmp_path / "d"), "--mast-url", url]) == 0
    out = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in out) == KEPT
    assert main(["retrieve", str(tmp_path / "nope.ecsv"), "--mast-url", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.ecsv: no such file" in err


# -- the retrieved products are cut by ``mvmflow cut`` ----------------------------------------

def test_retrieved_archive_products_are_cut(archive, tmp_path, capsys):
    table = _table(archive, tmp_path)
    got = hap.retrieve(table, tmp_path / "data", url=archive.server.url)
    assert main(["cut", *map(str, got), "--ra", str(CUT_RA), "--dec", str(CUT_DEC),
                 "--size", "2", "-o", str(tmp_path / "cut")]) == 0
    names = sorted(Path(p).name for p in capsys.readouterr().out.split())
    assert names == sorted(CutoutName.from_layer(LayerName.parse(n), CUT_RA, CUT_DEC).filename
                           for n in KEPT)
    with fits.open(tmp_path / "cut" / names[0]) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT"]
        assert hdul["SCI"].data.shape == (50, 50)
        assert hdul[0].header["ORIG_FLE"] in KEPT


def test_cutouts_rule_cuts_retrieved_archive_products(archive, tmp_path):
    """``cutouts: [{..., products: GLOB}]``: the workflow's cutouts and combine rules cut
    the archive's products given, as `mvmflow cut` does (same files, same bytes), and need
    no plan (no exposure is processed)."""
    from wfrun import run_snakemake

    from mvmflow.cutouts import make_cutouts

    got = hap.retrieve(_table(archive, tmp_path), tmp_path / "data", url=archive.server.url)
    box = {"ra": CUT_RA, "dec": CUT_DEC, "size": 2, "products": str(tmp_path / "data/*.fits")}
    config = {"outdir": "out", "cutouts": [box]}
    run = tmp_path / "run"
    from mvmflow.names import coord_token

    cutid = f"{coord_token(CUT_RA, CUT_DEC)}_2x2"
    target = f"out/cutouts/{cutid}/combined"
    out = run_snakemake(run, config, "--quiet", "rules", "-n", target)
    assert "cutouts" in out.stdout and "combine_cutouts" in out.stdout
    assert "plan" not in out.stdout and "screen" not in out.stdout
    run_snakemake(run, config, "--rerun-incomplete", target)
    made = run / "out" / "cutouts" / cutid / "cutouts"
    names = sorted(p.name for p in made.glob("*.fits"))
    assert names == sorted(CutoutName.from_layer(LayerName.parse(n), CUT_RA, CUT_DEC).filename
                           for n in KEPT)
    written, failed = make_cutouts(got, CUT_RA, CUT_DEC, 2, tmp_path / "by_hand")
    assert not failed
    for path in written:
        a, b = fits.getdata(path, "SCI"), fits.getdata(made / path.name, "SCI")
        assert np.array_equal(a, b, equal_nan=True)


# -- MAST's HAP cutout service --------------------------------------------------------------

def _hapcut_handler(archive, tmp_path, members=None):
    """``GET /hapcut/api/v0.1/astrocut``: a zip of SCI/WHT cutouts of the layers that overlap,
    as MAST's service answers (a JSON message when none does)."""
    from astropy.coordinates import SkyCoord
    from astropy.nddata import Cutout2D
    from astropy.wcs import WCS

    def handler(request):
        ra, dec = float(request.param("ra")), float(request.param("dec"))
        x, y, units = float(request.param("x")), float(request.param("y")), request.param("units")
        assert units == "d"
        buffer = io.BytesIO()
        count = 0
        with zipfile.ZipFile(buffer, "w") as zf:
            if members is not None:
                for name, data in members:
                    zf.writestr(name, data)
                count = len(members)
            for name, data in sorted(archive.layers.items()) if members is None else ():
                with fits.open(io.BytesIO(data)) as hdul:
                    wcs = WCS(hdul["SCI"].header)
                    pos = SkyCoord(ra * u.deg, dec * u.deg)
                    if not wcs.footprint_contains(pos):
                        continue
                    out = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)])
                    for ext in ("SCI", "WHT"):
                        cut = Cutout2D(hdul[ext].data, pos, (y * u.deg, x * u.deg), wcs=wcs,
                                       mode="partial")
                        out.append(fits.ImageHDU(cut.data, header=cut.wcs.to_header(),
                                                 name=ext))
                    cutname = CutoutName.from_layer(LayerName.parse(name), ra, dec).filename
                    b = io.BytesIO()
                    out.writeto(b)
                    zf.writestr(cutname, b.getvalue())
                    count += 1
        if not count:
            return 200, {"Content-Type": "application/json"}, json.dumps(
                {"msg": "No cutouts found for the given coordinates.", "results": []}).encode()
        return 200, {"Content-Type": "application/zip"}, buffer.getvalue()

    return handler


def test_archive_cutouts_through_hapcut(archive, tmp_path, capsys):
    server = archive.server
    server.add_route("GET", "/hapcut/api/v0.1/astrocut", _hapcut_handler(archive, tmp_path))
    dest = tmp_path / "hc"
    got = hap.archive_cutouts(CUT_RA, CUT_DEC, (3, 2), dest, url=server.url)
    expected = sorted(CutoutName.from_layer(LayerName.parse(n), CUT_RA, CUT_DEC).filename
                      for n in archive.layers)  # every layer of the archive there
    assert len(expected) == 6 and sorted(p.name for p in got) == expected
    assert sorted(p.name for p in dest.iterdir()) == expected  # no zip, no temporary left
    (request,) = [r for r in server.requests if r.path.startswith("/hapcut")]
    assert float(request.param("x")) == pytest.approx(3 / 3600)  # (w, h) -> Hapcut's x, y
    assert float(request.param("y")) == pytest.approx(2 / 3600)
    with fits.open(got[0]) as hdul:
        assert hdul["SCI"].data.shape == (50, 75)  # 2" x 3" at 0.04"/px
    # nothing overlaps: an empty list, no error
    assert hap.archive_cutouts(10.0, 10.0, 3, tmp_path / "none", url=server.url) == []
    # the command
    assert main(["archive-cutouts", "--ra", str(CUT_RA), "--dec", str(CUT_DEC), "--size", "3",
                 "2", "-o", str(tmp_path / "cli"), "--mast-url", server.url]) == 0
    assert sorted(Path(p).name for p in capsys.readouterr().out.split()) == expected


@pytest.mark.parametrize("member", ["../evil.fits", "/tmp/evil.fits", "sub/x.fits"])
def test_archive_cutouts_refuse_unsafe_members(mast_server, tmp_path, member):  # noqa: F811
    good = io.BytesIO()
    fits.PrimaryHDU(np.zeros((2, 2))).writeto(good)
    mast_server.add_route("GET", "/hapcut/api/v0.1/astrocut", _hapcut_handler(
        None, tmp_path, members=[("ok.fits", good.getvalue()), (member, good.getvalue())]))
    dest = tmp_path / "out" / "hc"
    with pytest.raises(hap.ArchiveError, match=rf"member '{member}' is not a plain file name"):
        hap.archive_cutouts(CUT_RA, CUT_DEC, 3, dest, url=mast_server.url)
    assert list(dest.iterdir()) == []  # nothing written, not even the good member
    assert not (tmp_path / "out" / "evil.fits").exists()


def test_a_sky_cell_reaching_the_box_is_kept_though_its_centre_is_outside():
    """The footprint decides (s_region), not the centre as in the reference: a box smaller
    than a sky cell, near the cell's edge, must still find that cell; a footprint that stops
    short of the box is dropped; without a footprint the centre decides."""

    def square(dra_sky, ddec, half):
        c_ra, c_dec = RA0 + dra_sky / 3600.0 / COS, DEC0 + ddec / 3600.0
        dr, dd = half / 3600.0 / COS, half / 3600.0
        corners = [(c_ra - dr, c_dec - dd), (c_ra + dr, c_dec - dd), (c_ra + dr, c_dec + dd),
                   (c_ra - dr, c_dec + dd)]
        return "POLYGON ICRS " + " ".join(f"{a:.8f} {d:.8f}" for a, d in corners)

    obs = Table(rows=[
        # a 720" sky cell centred 300" east: its west edge is 60" east, inside the 100" box
        (RA0 + 300 / 3600 / COS, DEC0, square(300, 0, 360)),
        # a 200" cell centred 300" east: its west edge at 200" stops short of the box
        (RA0 + 300 / 3600 / COS, DEC0, square(300, 0, 100)),
        # no footprint: the centre decides (inside, then outside)
        (RA0 + 40 / 3600 / COS, DEC0, ""),
        (RA0 + 60 / 3600 / COS, DEC0, ""),
    ], names=("s_ra", "s_dec", "s_region"))
    assert list(hap._overlaps(obs, RA0, DEC0, 100)) == [True, False, True, False]
