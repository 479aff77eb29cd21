"""The Attention page on a finished ViT -> ViT run in a real browser (the server and Chromium set-up of
test_browser.py): the teacher's and the student's attention rollout are drawn side by side, no figure's text
overlaps (the same check as test_browser's, on the transformer views), no error. The rollout figure's screenshot
goes to test-artifacts/; with KD_EXPLORER_UPDATE_SCREENSHOT=1 also to docs/screenshot-rollout.png (the README's)."""
import os
import shutil

import pytest

from test_browser import (ARTIFACTS, REPO, TEXT_BOXES_JS, _no_errors, launch_chromium, server,  # noqa: F401
                          sync_playwright)

pytestmark = pytest.mark.browser

# A tiny run for the test; KD_EXPLORER_ROLLOUT_PRESET=1 trains the "ViT attention" preset instead (for the README's
# screenshot: trained models look at the shapes).
TINY = dict(dataset="shapes", teacher="vit_tiny_p4", teacher_epochs=1, student="vit_tiny_p4", n_train=48, epochs=1,
            batch_size=16, probe_size=4, probe_epochs=[0, 1], methods=[{"key": "kd"}])


def test_the_attention_page_shows_teacher_and_student_rollout(server):  # noqa: F811 (the imported fixture)
    from explorer.engine.run import Trainer
    from explorer.store import Store
    url, _ = server
    store = Store()                     # the server's store (tmp_path/"home", as the fixture's)
    if os.environ.get("KD_EXPLORER_ROLLOUT_PRESET") == "1":
        from explorer.presets import preset_configs
        cfgs = preset_configs("vit-attention")[:1]
    else:
        cfgs = [TINY]
    for cfg in cfgs:
        assert Trainer(cfg, store).run()["status"] == "completed"
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/Attention_maps")
            page.get_by_text("Transformer attention").first.wait_for(timeout=120_000)
            figure = page.locator(".js-plotly-plot", has_text="rollout, epoch").first
            figure.wait_for(timeout=120_000)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(800)              # Plotly lays out its text after the first draw
            _no_errors(page, "Attention_maps")
            titles = figure.locator(".annotation-text").all_text_contents()   # SVG text: no innerText
            assert any(t.startswith("teacher: rollout") for t in titles), titles
            assert any(t.startswith("student: rollout") for t in titles), titles
            assert page.locator(".js-plotly-plot", has_text="class-token attention").count() == 2   # T and S grids
            problems = [o for o in page.evaluate(TEXT_BOXES_JS)
                        if "rollout" in o or "class-token" in o or "inside the object" in o]
            assert not problems, "\n".join(problems)
            ARTIFACTS.mkdir(exist_ok=True)
            figure.scroll_into_view_if_needed()
            figure.screenshot(path=ARTIFACTS / "rollout.png")
        finally:
            browser.close()
    if os.environ.get("KD_EXPLORER_UPDATE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(ARTIFACTS / "rollout.png", REPO / "docs" / "screenshot-rollout.png")
