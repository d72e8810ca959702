"""Look at a run's Snakemake report as a person would: in a browser, with a screenshot.

    snakemake --cores 2 --report results/report.html
    python benchmarks/report_screenshot.py results/report.html --out report.png
    python benchmarks/report_screenshot.py results/report.html --show footprints.png

Opens the report in headless Chromium (Debian: ``apt-get install --no-install-recommends
chromium``), shows the first result whose name ends in ``--show`` (default: a layer's
``_preview.png``) as a person would after clicking it in the sky cell's category, writes a
screenshot and checks that the browser decoded the picture (its natural size, read back from
the page; for an ``.html`` table, only that its frame is laid out). Snakemake's HTML report
is a JavaScript app with no addresses for its views, so the check works on a copy of the
report with a few lines of script added at the end that make the click; the report itself
is not changed. Exit status 0 when the item displays, 1 otherwise (docs/design.md,
"Previews and the report"; tests/test_report.py runs it when Chromium is installed).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
TITLE = "mvmflow-check:"

# Shows the first result whose path ends in SUFFIX (its category and subcategory in the
# menu, the picture in the content pane: what clicking it does), then reports in the
# document's title whether a PNG was decoded.
CLICK = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var suffix = %(suffix)s;
    var path = Object.keys(results).filter(function (p) { return p.endsWith(suffix); })
      .sort()[0];
    if (!path) { document.title = "%(title)s none " + suffix; return; }
    var cat, sub;
    for (var c in categories) for (var s in categories[c])
      if (categories[c][s].indexOf(path) >= 0) { cat = c; sub = s; }
    var html = suffix.slice(-5) === ".html";
    app.setView({navbarMode: "subcategory", category: cat, subcategory: sub,
                 content: html ? "html" : "img", contentPath: results[path].data_uri,
                 resultPath: path});
    setTimeout(function () {
      var size = "not-displayed";
      if (html) {  // a table: its page in the content pane's frame (a data: address, so
        // its document is not readable from here: the frame's size only)
        var frame = document.querySelector("iframe");
        if (frame && frame.src.indexOf("data:text/html") === 0 && frame.clientHeight > 0)
          size = frame.clientWidth + "x" + frame.clientHeight;
      } else {
        var shown = Array.prototype.filter.call(document.querySelectorAll("img"), function (i) {
          return i.src.indexOf("data:image/png") === 0 && i.complete && i.naturalWidth > 0;
        });
        if (shown.length) size = shown[0].naturalWidth + "x" + shown[0].naturalHeight;
      }
      document.title = "%(title)s " + path + " " + size;
    }, 1500);
  }, 500);
});
</script>
"""


def find_browser() -> str | None:
    """The path of a Chromium-like browser, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _browser(browser: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_report(report: str | Path, out: str | Path, show: str = "_preview.png",
                 window: tuple[int, int] = (1400, 1000), browser: str | None = None) -> dict:
    """Screenshot a report with result ``show`` opened; say whether its picture displays.

    Parameters
    ----------
    report : path
        A Snakemake HTML report (``snakemake --report report.html``).
    out : path
        The screenshot to write (PNG).
    show : str
        The end of the result's file name to open (the first in sorted order).
    window : (int, int)
        Browser window width and height, in pixels.
    browser : str, optional
        The browser; default the first of :data:`BROWSERS` on the PATH.

    Returns
    -------
    dict
        ``result`` (the result's path in the report, or None), ``width``/``height`` of the
        decoded picture (0 when it did not display; for an ``.html`` result the size of
        its frame), ``screenshot`` (the PNG's path).
    """
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium)")
    report, out = Path(report).resolve(), Path(out).resolve()
    html = report.read_text()
    script = CLICK % {"suffix": json.dumps(show), "title": TITLE}
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        end = html.rfind("</body>")  # the last: the report's scripts hold the string too
        page.write_text(html[:end] + script + html[end:] if end >= 0 else html + script)
        url = page.as_uri()
        dom = _browser(browser, "--dump-dom", url)
        shot = _browser(browser, f"--screenshot={out}", f"--window-size={window[0]},{window[1]}",
                        url)
    if shot.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{browser}: no screenshot of {report}: {shot.stderr[-500:]}")
    title = re.search(r"<title>\s*" + re.escape(TITLE) + r"\s*(.*?)\s*</title>", dom.stdout)
    result, width, height = None, 0, 0
    if title:
        words = title.group(1).split()
        if words and words[0] != "none":
            result = words[0]
            size = re.fullmatch(r"(\d+)x(\d+)", words[-1])
            if size:
                width, height = int(size.group(1)), int(size.group(2))
    return {"result": result, "width": width, "height": height, "screenshot": str(out)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="the HTML report (snakemake --report report.html)")
    parser.add_argument("--out", default="report.png", help="screenshot (PNG)")
    parser.add_argument("--show", default="_preview.png",
                        help="open the first result whose name ends so (default %(default)s)")
    parser.add_argument("--window", default="1400,1000", help="width,height")
    args = parser.parse_args(argv)
    window = tuple(int(v) for v in args.window.split(","))
    try:
        found = check_report(args.report, args.out, args.show, window)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"report_screenshot: {error}", file=sys.stderr)
        return 1
    if not found["width"]:
        print(f"report_screenshot: {args.report}: no {args.show} displayed "
              f"(result {found['result']}); screenshot {found['screenshot']}", file=sys.stderr)
        return 1
    print(f"{found['result']}: displayed, {found['width']} x {found['height']} px; "
          f"screenshot {found['screenshot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
