"""Figures as files, with no Streamlit: a standalone HTML page (plotly.js inside, opens offline), a PNG where
this machine can render one (the configs of the runs it shows inside it), and a page's figures as one zip with
the config of each run they show.

PNG needs kaleido (>= 1.0), which drives a Chrome/Chromium already installed on the server; KD Explorer never
downloads a browser. Without both, PNG is left out and `png_missing()` says why (HTML and the zip still work)."""
from __future__ import annotations

import importlib.util
import io
import re
import shutil
import zipfile
from typing import Mapping

import yaml

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def png_missing() -> str | None:
    """None when PNG export can run here; else why not (shown beside the downloads)."""
    if importlib.util.find_spec("kaleido") is None:
        return "PNG needs kaleido (`pip install kaleido`) and a Chrome/Chromium on the server; HTML works as is"
    if not any(shutil.which(b) for b in BROWSERS):
        return "PNG needs a Chrome/Chromium on the server for kaleido (none found); HTML works as is"
    return None


def figure_html(fig, runs: Mapping[str, Mapping] | None = None) -> str:
    """The figure as one HTML file that works offline (plotly.js included), with the config of each run it
    shows below it (runs: id -> run dict)."""
    import html
    page = fig.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    if not runs:
        return page
    configs = "".join(f"<details><summary>Config of run {html.escape(str(rid))}</summary><pre>"
                      f"{html.escape(run_config_yaml(run))}</pre></details>" for rid, run in dict(runs).items())
    return page.replace("</body>", configs + "</body>", 1)


def figure_png(fig, runs: Mapping[str, Mapping] | None = None, scale: float = 2.0) -> bytes:
    """The figure as a PNG image; the configs of the runs it shows (runs: id -> run dict) ride inside it as
    an iTXt chunk (png_with_configs), so the image alone says how to rerun what it shows."""
    png = fig.to_image(format="png", scale=scale)
    return png_with_configs(png, runs) if runs else png


PNG_CONFIG_KEY = "kd-explorer-config"


def png_with_configs(png: bytes, runs: Mapping[str, Mapping]) -> bytes:
    """PNG bytes with the runs' configs as JSON in an iTXt chunk keyed "kd-explorer-config":
    {run id: {"name", "config"}}; read back with PIL: json.loads(Image.open(f).text["kd-explorer-config"]).
    The pixels are unchanged; text chunks already there are kept."""
    import json

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    image = Image.open(io.BytesIO(png))
    info = PngInfo()
    for key, value in getattr(image, "text", {}).items():
        if key != PNG_CONFIG_KEY:
            info.add_itxt(key, value)
    info.add_itxt(PNG_CONFIG_KEY, json.dumps({str(rid): {"name": run.get("name"), "config": dict(run.get("config") or {})}
                                              for rid, run in dict(runs).items()}, default=str))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "figure"


def run_config_yaml(run: Mapping) -> str:
    """A run's config as YAML with its id, name and test accuracy as comments (`kd-explorer run --config` reads it)."""
    head = f"# run {run.get('id')} · {run.get('name')}"
    acc = (run.get("summary") or {}).get("test_acc")
    if acc is not None:
        head += f" · test accuracy {acc:.4f}"
    return head + "\n" + yaml.safe_dump(dict(run.get("config") or {}), sort_keys=False)


def figures_zip(figures: Mapping[str, object], runs: Mapping[str, Mapping] = (), png: bool | None = None) -> bytes:
    """figures: name -> plotly Figure; runs: id -> run dict (its config goes alongside as config-<id>.yaml).
    Each figure as <name>.html, and <name>.png where PNG export runs here (png None: when it can)."""
    png = png_missing() is None if png is None else png
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, fig in figures.items():
            z.writestr(f"{safe_name(name)}.html", figure_html(fig))
            if png:
                try:
                    z.writestr(f"{safe_name(name)}.png", figure_png(fig, runs))
                except Exception as e:   # a browser that fails to start: the HTML is there
                    z.writestr(f"{safe_name(name)}.png.txt", f"PNG export failed: {e}")
        for rid, run in dict(runs).items():
            z.writestr(f"config-{safe_name(rid)}.yaml", run_config_yaml(run))
        note = png_missing() if not png else None
        z.writestr("README.txt", "Figures from KD Explorer: open the .html files in any browser (they work offline);"
                                 " config-*.yaml are the runs' configs (`kd-explorer run --config FILE` reruns one)."
                   + (f"\nNo PNG: {note}." if note else "") + "\n")
    return buf.getvalue()
