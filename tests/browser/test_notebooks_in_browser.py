"""The notebooks' interactive figures where learners see them: JupyterLab 4 in a real Chromium.

nbval checks what the kernel prints, never what a learner sees (it skips widget views, and the stored
outputs are the static fallback). Here each notebook with widgets is opened in JupyterLab, all its cells
are run with live widgets, and the page is checked: no error output, no "Error displaying widget",
every explorer and playground shows its controls with readable labels and a sharp picture (a playground's
bars visible, whatever the model), and turning
a control changes the picture or the text within a few seconds. A screenshot per notebook (and one per
widget) lands in ``build/browser-screenshots/`` (or ``$GPT_FROM_SCRATCH_SCREENSHOTS``); pytest's summary
lists the files.

Needs Chromium (Debian: ``apt-get install chromium``), Playwright for Python and JupyterLab (both in
the ``dev`` extra); skipped with the reason where one is missing (failed in CI, which sets
``GPT_FROM_SCRATCH_REQUIRE_BROWSER=1``). Deselect with ``-m "not browser"``.
"""

import os
import re
import time
from pathlib import Path

import nbformat
import pytest

import browser_lab

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
SCREENSHOTS = Path(os.environ.get("GPT_FROM_SCRATCH_SCREENSHOTS", ROOT / "build" / "browser-screenshots"))

# Every notebook that shows widgets, with the widgets in the order they appear. A notebook that gains one
# must be listed here (test_every_notebook_with_widgets_is_listed checks).
WIDGET_NOTEBOOKS = {
    "02_causal_multihead_attention.ipynb": ["explorer"],
    "05_greedy_generation.ipynb": ["playground"],
    "06_pretraining.ipynb": ["explorer", "playground"],
}
# Notebooks whose widgets appear only with OpenAI's real weights, which cannot be downloaded here: 08
# opens the explorer on GPT-2 124M where the weights can be had, and prints one line where they cannot.
NEEDS_REAL_WEIGHTS = {"08_loading_gpt2.ipynb": ["explorer"]}
CLASSES = {"AttentionExplorer": "explorer", "GenerationPlayground": "playground"}
# The labels each kind of widget shows, left to right, top to bottom.
LABELS = {
    "explorer": ["layer", "head", "query"],
    "playground": ["prompt", "temperature", "top-k (0 = off)", "new tokens", "seed"],
}
RESPONSE_SECONDS = 30  # a control's change must show within this (2 busy cores; 05 runs the 124M model)
WIDGET_VIEW = ".jp-OutputArea-output > .jupyter-widgets"  # the root view of each displayed widget


def widgets_in_source(path):
    """The kinds of widget a notebook's code shows, in order: ``x = AttentionExplorer...`` then ``x.show(``."""
    kinds, shown = {}, []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            if m := re.match(r"\s*(\w+)\s*=\s*(\w+)\b", line):
                if m[2] in CLASSES:
                    kinds[m[1]] = CLASSES[m[2]]
            for name in re.findall(r"\b(\w+)\.show\(", line):
                if name in kinds:
                    shown.append(kinds[name])
    return shown


def test_every_notebook_with_widgets_is_listed():
    found = {p.name: kinds for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if (kinds := widgets_in_source(p))}
    assert found == {**WIDGET_NOTEBOOKS, **NEEDS_REAL_WEIGHTS}


# ---- in the browser ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(request):
    reason = browser_lab.missing()
    if reason:
        if os.environ.get(browser_lab.REQUIRE_ENV) == "1":
            pytest.fail(f"browser test required ({browser_lab.REQUIRE_ENV}=1) but {reason}")
        pytest.skip(reason)
    started = browser_lab.Lab([NOTEBOOKS / name for name in WIDGET_NOTEBOOKS])
    request.addfinalizer(started.stop)  # registered first: stops whatever did start, in every case
    t0 = time.monotonic()
    started.start()
    browser_lab.REPORT.append(f"JupyterLab and Chromium started in {time.monotonic() - t0:.0f} s")
    return started


def cell_problems(page):
    """Code cells that did not run, raised, or wrote to stderr: ``[str]``."""
    cells = page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.widgets"
        ".filter(c => c.model.type === 'code')"
        ".map(c => ({count: c.model.executionCount, source: c.model.sharedModel.getSource(),"
        " outputs: c.model.outputs.toJSON()}))")
    problems = []
    for i, cell in enumerate(cells):
        first_line = cell["source"].strip().splitlines()[0] if cell["source"].strip() else ""
        if cell["count"] is None:
            problems.append(f"code cell {i} ({first_line!r}) did not run")
        for out in cell["outputs"]:
            if out["output_type"] == "error":
                problems.append(f"code cell {i} ({first_line!r}) raised {out['ename']}: {out['evalue']}")
            elif out["output_type"] == "stream" and out["name"] == "stderr":
                problems.append(f"code cell {i} ({first_line!r}) wrote to stderr: {''.join(out['text'])[:300]}")
    return problems


LOOK = """el => {
    const labels = [...el.querySelectorAll('.widget-label')].filter(l => l.offsetParent && l.innerText.trim());
    const img = el.querySelector('img');
    return {
        labels: labels.map(l => l.innerText.trim()),
        cut: labels.filter(l => l.scrollWidth > l.clientWidth + 1).map(l => l.innerText.trim()),
        labelWidths: labels.map(l => Math.round(l.getBoundingClientRect().width)),
        img: img && {natural: img.naturalWidth, shown: img.clientWidth, complete: img.complete},
        outputWidth: el.clientWidth,
    };
}"""

# The share of the playground's picture in the bars' colour (tab:blue): 0 when the bars are too thin to see
# (an untrained model's top probabilities, about 1e-4, on a 0..1 axis drew an empty chart).
BARS = """async el => {
    const img = el.querySelector('img');
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let blue = 0;
    for (let i = 0; i < data.length; i += 4)
        if (Math.abs(data[i] - 31) + Math.abs(data[i + 1] - 119) + Math.abs(data[i + 2] - 180) < 30) blue++;
    return blue / (canvas.width * canvas.height);
}"""

STATE = "el => [el.querySelector('img') && el.querySelector('img').src, el.querySelector('pre') && el.querySelector('pre').innerText]"


def changes(page, widget, action):
    """Do ``action()`` and return how many seconds until the widget's picture or text changed."""
    handle = widget.element_handle()
    before = handle.evaluate(STATE)
    t0 = time.monotonic()
    action()
    page.wait_for_function(f"([el, before]) => {{ const now = ({STATE})(el);"
                           " return now[0] !== before[0] || now[1] !== before[1]; }",
                           arg=[handle, before], timeout=RESPONSE_SECONDS * 1000)
    return time.monotonic() - t0


def control(widget, label, css):
    """The control ``css`` (e.g. ``.widget-slider``) whose description is exactly ``label``."""
    return widget.locator(css).filter(has=widget.page.locator(".widget-label", has_text=re.compile(f"^{re.escape(label)}$")))


def nudge_slider(widget, label):
    handle = control(widget, label, ".widget-slider").locator(".noUi-handle")
    handle.focus()
    handle.press("ArrowRight")


def interact(page, widget, kind):
    """Turn the controls a learner would try first; returns ``{control: seconds until the view changed}``."""
    if kind == "explorer":
        return {
            "query token": changes(page, widget, lambda: control(widget, "query", ".widget-dropdown")
                                   .locator("select").select_option(index=0)),
            "head": changes(page, widget, lambda: nudge_slider(widget, "head")),
        }
    prompt = control(widget, "prompt", ".widget-text").locator("input")

    def new_prompt():
        prompt.fill(prompt.input_value() + " and")
        prompt.press("Enter")

    return {
        "prompt": changes(page, widget, new_prompt),
        "temperature": changes(page, widget, lambda: nudge_slider(widget, "temperature")),
    }


@pytest.mark.browser
@pytest.mark.parametrize("name", list(WIDGET_NOTEBOOKS))
def test_widgets_render_and_respond_in_jupyterlab(lab, name):
    t0 = time.monotonic()
    page = lab.open(name)
    try:
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        lab.wait_until_idle()
        run_seconds = time.monotonic() - t0
        assert not cell_problems(page), "\n".join(cell_problems(page))
        assert page.get_by_text("Error displaying widget").count() == 0
        widgets = page.locator(WIDGET_VIEW)
        kinds = WIDGET_NOTEBOOKS[name]
        assert widgets.count() == len(kinds), f"{widgets.count()} widget views, expected {kinds}"

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        stem = name.removesuffix(".ipynb")
        timings = {}
        for i, kind in enumerate(kinds):
            widget = widgets.nth(i)
            widget.scroll_into_view_if_needed()
            look = widget.evaluate(LOOK)
            assert look["labels"] == LABELS[kind], f"{kind}: controls {look['labels']}"
            assert not look["cut"], f"{kind}: labels cut off: {look['cut']}"
            assert len(set(look["labelWidths"])) == 1, f"{kind}: labels of unequal width {look['labelWidths']}"
            img = look["img"]
            assert img and img["complete"] and img["shown"] >= 200, f"{kind}: no picture shown ({img})"
            # drawn with at least 2 PNG pixels per CSS pixel: sharp on this 2x (high-DPI) page
            assert img["natural"] >= 2 * img["shown"] - 2, f"{kind}: picture {img['natural']} px shown at {img['shown']}"
            if kind == "playground":
                share = widget.evaluate(BARS)
                assert share > 0.01, f"playground: the bars cover {share:.2%} of the chart, too thin to see"
            for what, seconds in interact(page, widget, kind).items():
                timings[f"{kind} {what}"] = seconds
            assert not cell_problems(page), "\n".join(cell_problems(page))  # the callbacks raised nothing
            widget.screenshot(path=SCREENSHOTS / f"{stem}_{kind}.png")
            browser_lab.SCREENSHOTS.append(SCREENSHOTS / f"{stem}_{kind}.png")
        widgets.nth(0).scroll_into_view_if_needed()
        page.screenshot(path=SCREENSHOTS / f"{stem}.png")
        browser_lab.SCREENSHOTS.append(SCREENSHOTS / f"{stem}.png")
        assert page.get_by_text("Error displaying widget").count() == 0
        browser_lab.REPORT.append(
            f"{name}: ran in {run_seconds:.0f} s; views changed after "
            + ", ".join(f"{what} {s:.1f} s" for what, s in timings.items()))
    except Exception:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"{name.removesuffix('.ipynb')}_FAILED.png")
        browser_lab.SCREENSHOTS.append(SCREENSHOTS / f"{name.removesuffix('.ipynb')}_FAILED.png")
        raise
    finally:
        page.evaluate("() => window.jupyterapp.commands.execute('kernelmenu:shutdown')")
        page.close()


@pytest.mark.browser
def test_no_process_left_behind(lab):
    """Runs last in this module: stopping the lab ends the server, its kernels and the browser."""
    assert lab.watched, "no process recorded"
    lab.stop()
    assert lab.leftovers() == []
