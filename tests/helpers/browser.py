"""A real browser for tests: headless Chromium through Selenium, or a skip (a failure under CI=true) that
names how to install it."""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

CHROMIUM_INSTALL = "apt-get install -y chromium chromium-driver"


@pytest.fixture(scope="session")
def launch_chromium():
    """A function (width, height, **capabilities) -> a Selenium driver of headless Chromium with a fresh
    profile. Without Chromium, chromedriver or selenium the test skips, saying how to install them,
    except under CI=true where it fails. Every driver it started is quit at the end of the session."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    missing = [name for name, found in (("chromium", chromium), ("chromedriver", driver_path),
                                        ("selenium", webdriver)) if not found]
    if missing:
        how = [CHROMIUM_INSTALL] if {"chromium", "chromedriver"} & set(missing) else []
        how += ["pip install selenium"] if "selenium" in missing else []
        reason = f"needs {', '.join(missing)}: {' and '.join(how)}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    drivers = []

    def launch(width: int, height: int, **capabilities):
        options = Options()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    f"--window-size={width},{height}", "--disable-background-networking", "--no-first-run",
                    "--disable-extensions", "--disable-component-update", "--disable-sync"):
            options.add_argument(arg)
        for name, value in capabilities.items():
            options.set_capability(name, value)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        driver.set_page_load_timeout(60)
        drivers.append(driver)
        return driver

    yield launch
    for driver in drivers:
        with contextlib.suppress(Exception):  # a fixture may have quit it already
            driver.quit()
