"""A throwaway JupyterLab server and a headless Chromium driven by Playwright, for the browser tests.

``Lab.start()`` copies the notebooks into a temporary root, starts ``jupyter lab`` on 127.0.0.1 with a
random port and token, a temporary workspaces and settings directory (old tabs do not reopen; every
cell is rendered, not only those on screen), and launches the system's Chromium (Debian's package:
Playwright's own browser download is not used). ``Lab.stop()`` closes the browser and ends the server's
whole process group, kernels included, and is safe to call twice; ``Lab.leftovers()`` lists any process
that survived.
"""

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# In CI (.ci/run sets it) a missing browser is a failure, not a skip.
REQUIRE_ENV = "GPT_FROM_SCRATCH_REQUIRE_BROWSER"


def chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing():
    """Why the browser tests cannot run here, or None."""
    if os.environ.get("GPT_FROM_SCRATCH_BROWSER") == "0":
        return "browser test switched off: GPT_FROM_SCRATCH_BROWSER=0"
    if chromium_path() is None:
        return "Chromium is not installed (Debian: apt-get install chromium)"
    for module, dist in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        if importlib.util.find_spec(module) is None:
            return f"{dist} is not installed (pip install -e '.[dev]')"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid):
    """True if process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _processes():
    """{pid: (ppid, pgid, command)} of every process (Linux /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[0] != "Z":
                found[int(entry)] = (int(fields[1]), int(fields[2]), command)
    return found


def _descendants(pid):
    table = _processes()
    children, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, _, _) in table.items():
            if ppid == parent and child not in children:
                children.add(child)
                todo.append(child)
    return children


class Lab:
    def __init__(self, notebooks):
        self.notebooks = [Path(n) for n in notebooks]
        self.tmp = Path(tempfile.mkdtemp(prefix="gpt-from-scratch-lab-"))
        self.root = self.tmp / "root"
        self.server = None
        self.playwright = self.browser = self.context = None
        self.watched = set()  # pids that must be gone after stop(): the server's group, the browser's tree
        self.log = self.tmp / "jupyter.log"

    # ---- the server -------------------------------------------------------------------------------
    def start(self):
        self.root.mkdir()
        for nb in self.notebooks:
            shutil.copy(nb, self.root / nb.name)
        settings = self.tmp / "settings"
        tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True)
        # JupyterLab 4 renders only the cells on screen by default; "none" renders them all.
        tracker.write_text(json.dumps({"windowingMode": "none"}))
        news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True)
        news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))

        # The kernels get the live widgets: the test process has GPT_FROM_SCRATCH_STATIC=1 for nbval.
        env = {k: v for k, v in os.environ.items() if k != "GPT_FROM_SCRATCH_STATIC"}
        for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
            env[name] = str(self.tmp / name.lower())
        self.token = secrets.token_hex(16)
        for attempt in range(3):  # another process may take the free port before the server does
            self.port = _free_port()
            command = [
                sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}", f"--LabApp.workspaces_dir={self.tmp / 'workspaces'}",
                f"--LabApp.user_settings_dir={settings}", "--LabApp.expose_app_in_browser=True",
            ] + (["--allow-root"] if os.geteuid() == 0 else [])  # CI runs as root
            with open(self.log, "ab") as log:
                # its own process group: stop() ends the server and every kernel it started at once
                self.server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            self.watched.add(self.server.pid)
            if self._wait_for_server(timeout=90):
                break
            self._stop_server()
        else:
            raise RuntimeError(f"jupyter lab did not start; its log:\n{self.log.read_text()[-3000:]}")
        self.url = f"http://127.0.0.1:{self.port}"
        self._start_browser()
        return self

    def _wait_for_server(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                return False
            try:
                self.api("status")
                return True
            except OSError:
                time.sleep(0.5)
        return False

    def api(self, path):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}",
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def wait_until_idle(self, quiet=3.0, timeout=300):
        """Wait until every kernel has been idle for ``quiet`` seconds in a row."""
        deadline, since = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            states = [k["execution_state"] for k in self.api("kernels")]
            if states and all(s == "idle" for s in states):
                since = since or time.monotonic()
                if time.monotonic() - since >= quiet:
                    return
            else:
                since = None
            time.sleep(0.5)
        raise TimeoutError(f"kernels still busy after {timeout} s")

    # ---- the browser ------------------------------------------------------------------------------
    def _start_browser(self):
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(
            executable_path=chromium_path(),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],  # root in CI: no sandbox
        )
        self.watched |= {pid for pid in _descendants(os.getpid()) if pid != self.server.pid}
        # device_scale_factor 2: a high-DPI screen, where a figure drawn at 1x looks blurred
        self.context = self.browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=2)

    def open(self, name):
        """A new page with notebook ``name`` open and its kernel ready."""
        page = self.context.new_page()
        page.goto(f"{self.url}/lab/tree/{name}?token={self.token}")
        page.wait_for_function(
            "name => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " return w && w.context && w.context.path === name; }", arg=name, timeout=60_000)
        page.evaluate("async () => { const w = window.jupyterapp.shell.currentWidget;"
                      " await w.context.ready; await w.sessionContext.ready; }")
        return page

    # ---- stopping ---------------------------------------------------------------------------------
    def _stop_server(self):
        if self.server is None:
            return
        try:
            os.killpg(self.server.pid, signal.SIGTERM)  # the server and its kernels
            self.server.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait(timeout=10)
        self._kill_group(self.server.pid)  # kernels that outlived the server
        self.server = None

    @staticmethod
    def _kill_group(pgid):
        for pid, (_, group, _) in _processes().items():
            if group == pgid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stop(self):
        """Close the browser and stop the server; safe to call more than once and after a failed start."""
        self.watched |= {pid for pid, (_, group, _) in _processes().items()
                         if self.server is not None and group == self.server.pid}
        try:
            for thing in (self.context, self.browser):
                if thing is not None:
                    try:
                        thing.close()
                    except Exception:  # noqa: BLE001 - closing must go on whatever happened
                        pass
            if self.playwright is not None:
                self.playwright.stop()
        finally:
            self.context = self.browser = self.playwright = None
            self._stop_server()
            deadline = time.monotonic() + 10
            while self.leftovers() and time.monotonic() < deadline:
                time.sleep(0.2)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def leftovers(self):
        """Processes this lab started that are still running: ``[(pid, command)]``."""
        table = _processes()
        return [(pid, table[pid][2]) for pid in sorted(self.watched) if pid in table and _alive(pid)]

# What the browser tests report at the end of the run (tests/browser/conftest.py prints it).
REPORT = []
SCREENSHOTS = []
