# nbval compares every cell's stderr. The first `import matplotlib` on a fresh machine logs
# "Matplotlib is building the font cache" to stderr, which would break the first notebook that plots;
# building the cache here, in the test process, before any notebook kernel starts, avoids that.
import matplotlib.font_manager  # noqa: F401
