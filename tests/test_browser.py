"""The sliders of ``00_tour`` in a real browser: JupyterLab on 127.0.0.1, headless Chromium through Selenium.

Runs every cell, waits for the KD explorer (the widget box with CSS class ``kd-explorer``) and its plot, moves the
temperature slider with the keyboard and checks that the plot is redrawn. Saves the screenshot to
``runs/figures/00_tour_sliders.png`` (ignored by git); ``KDLIB_REFRESH_GALLERY=1`` writes the README's copy in
``figures/`` instead. Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); skipped without.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kdlib.paths import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NOTEBOOK = PROJECT_ROOT / "notebooks" / "00_tour.ipynb"
SCREENSHOT_NAME = "00_tour_sliders.png"


def screenshot_path() -> Path:
    """``runs/figures/`` (ignored by git); the README's gallery ``figures/`` only when ``KDLIB_REFRESH_GALLERY=1``."""
    folder = "figures" if os.environ.get("KDLIB_REFRESH_GALLERY") == "1" else "runs/figures"
    return PROJECT_ROOT / folder / SCREENSHOT_NAME

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
        reason="needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)",
    ),
]

QUIET_SETTINGS = {  # no news or update checks (no network), no toasts over the screenshot
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}

# Headless Chromium gives no window focus, so ``app.shell.currentWidget`` can stay null: every snippet finds the
# notebook panel among the main area's widgets by its path instead.
JS_FIND_PANEL = """
const app = window.jupyterapp;
const panel = app ? Array.from(app.shell.widgets('main')).find(
  (w) => w.context && w.sessionContext && w.context.path.endsWith('00_tour.ipynb')) : undefined;
"""
JS_NOTEBOOK_READY = JS_FIND_PANEL + """
if (!panel) return false;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
return Boolean(panel.context.isReady && kernel && kernel.status === 'idle');
"""
JS_RUN_ALL = JS_FIND_PANEL + """
const done = arguments[arguments.length - 1];
if (!panel) { done('error: no 00_tour.ipynb panel in the main area'); return; }
// widgetId names the panel, so the command does not fall back to the notebook tracker's (focus-based) current one
app.commands.execute('notebook:run-all-cells', {widgetId: panel.id}).then(
  () => done('ok'), (e) => done('error: ' + e));
"""
JS_KERNEL_IDLE = JS_FIND_PANEL + """
const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
return Boolean(kernel && kernel.status === 'idle');
"""
JS_PLOT = """
const img = document.querySelector('.kd-explorer .jp-OutputArea-output img');
return img && img.complete && img.naturalWidth > 0 ? img.src : null;
"""
JS_ERRORS = """
return Array.from(document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
  .map((e) => e.textContent).filter((t) => /Error|Traceback/.test(t)).join('\\n');
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def served_port(runtime: Path, proc: subprocess.Popen, log: Path, timeout: float = 90) -> int:
    """The port the server bound, from the ``jpserver-<pid>.json`` file it writes into its runtime folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        info = runtime / f"jpserver-{proc.pid}.json"
        try:
            return int(json.loads(info.read_text())["port"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.5)
    pytest.fail(f"jupyter lab wrote no runtime file within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def start_lab(tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    """JupyterLab serving a copy of the notebook, with its own config folder and the kernel on this Python."""
    root, config, runtime = tmp_path / "lab", tmp_path / "jupyter-config", tmp_path / "jupyter-runtime"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    for name, settings in QUIET_SETTINGS.items():
        target = config / "lab" / "user-settings" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(settings))
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # kernel = this Python
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--port-retries=50",
        "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--expose-app-in-browser", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    log = tmp_path / "jupyter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    try:
        # The chosen port can be taken by another process (Ray in a parallel test worker) before the server binds
        # it; the server then moves on to a free one and says which in its runtime file.
        port = served_port(runtime, proc, log)
        base = f"http://127.0.0.1:{port}"
        wait_for_server(f"{base}/api/status?token={token}", proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc, f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", log


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def start_chromium(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


def temperature_handle(driver):
    """The handle of the slider labelled 'T' inside the KD explorer."""
    from selenium.webdriver.common.by import By

    return driver.find_element(
        By.XPATH,
        "//*[contains(@class, 'kd-explorer')]//*[contains(@class, 'widget-slider')]"
        "[.//label[normalize-space()='T']]//*[contains(@class, 'noUi-handle')]",
    )


def wait_until_settled(driver, timeout: float = 90) -> str:
    """The plot once the kernel is idle and the image stayed the same for a second (every redraw has landed)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        current = driver.execute_script(JS_PLOT) if driver.execute_script(JS_KERNEL_IDLE) else None
        if current is not None and current == last:
            return current
        last = current
        time.sleep(1.0)
    pytest.fail(f"the KD explorer did not settle within {timeout:.0f} s")


def test_the_temperature_slider_redraws_the_plot(tmp_path: Path, isolated_folders) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    proc, url, log = start_lab(tmp_path)
    driver = None
    try:
        driver = start_chromium(tmp_path)
        driver.get(url)
        WebDriverWait(driver, 90, poll_frequency=0.5).until(
            lambda d: d.execute_script(JS_NOTEBOOK_READY), "the notebook did not open with an idle kernel"
        )
        assert driver.execute_async_script(JS_RUN_ALL) == "ok"
        try:
            before = WebDriverWait(driver, 120, poll_frequency=0.5).until(lambda d: d.execute_script(JS_PLOT))
        except TimeoutException:
            pytest.fail(f"no plot in the KD explorer; errors in the notebook: {driver.execute_script(JS_ERRORS)!r}")
        assert before.startswith("data:image/png;base64,")
        readout = driver.execute_script(
            "return document.querySelector('.kd-explorer .widget-readout').textContent.trim()"
        )

        handle = temperature_handle(driver)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
        handle.click()
        for _ in range(10):
            handle.send_keys(Keys.ARROW_RIGHT)  # a log slider: each step multiplies T by 10 ** 0.02
        WebDriverWait(driver, 60, poll_frequency=0.25).until(
            lambda d: (src := d.execute_script(JS_PLOT)) and src != before,
            "the plot was not redrawn after the temperature slider moved",
        )
        after = wait_until_settled(driver)
        moved = driver.execute_script(
            "return document.querySelector('.kd-explorer .widget-readout').textContent.trim()"
        )
        assert float(moved) > float(readout), f"T readout went from {readout} to {moved}"
        assert after.startswith("data:image/png;base64,") and after != before

        driver.execute_script("window.jupyterapp.shell.collapseLeft();")  # more room for the notebook
        explorer = driver.find_element("css selector", ".kd-explorer")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", explorer)
        time.sleep(0.5)  # let the scroll settle before the picture
        screenshot = screenshot_path()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
    finally:
        if driver is not None:
            driver.quit()
        stop(proc)
