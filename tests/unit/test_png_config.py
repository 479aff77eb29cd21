"""A figure's PNG download carries the configs of the runs it shows (an iTXt chunk, key kd-explorer-config),
and is still a PNG any reader opens, pixels unchanged."""
import io
import json
import zipfile

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from explorer.app import export as X
from explorer.config import RunConfig

RUNS = {"20260101-000000-abc123": {"id": "20260101-000000-abc123", "name": "kd · cnn_tiny · digits",
                                   "config": RunConfig.from_dict({"dataset": "digits", "epochs": 3,
                                                                  "methods": [{"key": "kd"}]}).to_dict(),
                                   "summary": {"test_acc": 0.9}},
        "20260101-000001-def456": {"id": "20260101-000001-def456", "name": "student alone",
                                   "config": {"dataset": "digits", "scheme": "offline", "methods": []}}}


def read_configs(data: bytes) -> dict:
    image = Image.open(io.BytesIO(data))
    image.load()                                   # the whole file decodes
    return json.loads(image.text[X.PNG_CONFIG_KEY])


def test_the_configs_ride_inside_the_png_and_the_image_is_unchanged():
    image = Image.new("RGB", (7, 5), (10, 200, 30))
    image.putpixel((3, 2), (255, 0, 0))
    info = PngInfo()
    info.add_text("Software", "plotly")            # a chunk the renderer wrote: kept
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    out = X.png_with_configs(buf.getvalue(), RUNS)
    assert out[:8] == b"\x89PNG\r\n\x1a\n"
    back = Image.open(io.BytesIO(out))
    assert back.size == (7, 5) and back.convert("RGB").tobytes() == image.tobytes()
    assert back.text["Software"] == "plotly"
    assert read_configs(out) == {rid: {"name": r["name"], "config": r["config"]} for rid, r in RUNS.items()}
    again = X.png_with_configs(out, {"x": {"name": "other", "config": {"epochs": 1}}})   # replaced, not doubled
    assert read_configs(again) == {"x": {"name": "other", "config": {"epochs": 1}}}


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_figure_download_and_the_page_zip_carry_the_configs(monkeypatch):
    import plotly.graph_objects as go
    fig = go.Figure(go.Bar(x=["kd", "alone"], y=[0.9, 0.8]))
    monkeypatch.setattr(fig, "to_image", lambda format, scale: small_png())   # the renderer (kaleido) stood in for
    assert read_configs(X.figure_png(fig, RUNS))["20260101-000000-abc123"]["config"]["epochs"] == 3
    assert X.PNG_CONFIG_KEY not in Image.open(io.BytesIO(X.figure_png(fig))).text    # no runs shown: no chunk
    z = zipfile.ZipFile(io.BytesIO(X.figures_zip({"gap": fig}, RUNS, png=True)))
    assert set(read_configs(z.read("gap.png"))) == set(RUNS)


def test_a_figure_rendered_by_kaleido_carries_the_configs():
    pytest.importorskip("kaleido")
    if X.png_missing() is not None:
        pytest.skip(X.png_missing())
    import plotly.graph_objects as go
    one = X.figure_png(go.Figure(go.Bar(x=["kd", "alone"], y=[0.9, 0.8])), RUNS)     # one render: it starts a browser
    assert read_configs(one)["20260101-000000-abc123"]["name"] == "kd · cnn_tiny · digits"
    assert Image.open(io.BytesIO(one)).size[0] > 100
