import os
import tempfile

# nbval compares every cell's stderr. The first `import matplotlib` on a fresh machine logs
# "Matplotlib is building the font cache" to stderr, which would break the first notebook that plots;
# building the cache here, in the test process, before any notebook kernel starts, avoids that.
import matplotlib.font_manager  # noqa: F401

# Interactive widgets (gpt_from_scratch.classroom.widgets) draw their static view in the kernels nbval starts
# (they inherit this environment), as they did when tools/notebooks.py stored the outputs. Widget
# state is not part of a stored notebook, so the static figure is what a reader of the file sees.
os.environ["GPT_FROM_SCRATCH_STATIC"] = "1"

# Notebook 08 loads OpenAI's GPT-2 where it can be downloaded; its stored outputs come from a run where
# it cannot (tools/notebooks.py sets the same), so nbval's kernels get Hugging Face's offline mode and
# an empty cache: the same outputs on every machine, and no download during the tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="nbval-hf-cache-")
