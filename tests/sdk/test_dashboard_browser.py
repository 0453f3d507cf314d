"""The dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven with
Selenium): log in with an admin token, watch a cooling key's countdown go down, re-enable a key,
filter the requests, open a request with two attempts, see the usage chart drawn. Screenshots
of every page go to target/dashboard-screenshots/ (kept by CI as artifacts). Every URL the
browser loads is checked to be the gateway's own.

Without chromium/chromedriver the tests skip with the reason, except in CI (CI=true), where
they fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import anthropic
import pytest

from conftest import MODEL, REPO_ROOT, _binary, _child_env

SCREENSHOTS = REPO_ROOT / "target" / "dashboard-screenshots"
CHROMEDRIVER = os.environ.get("AIBRIDGE_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("AIBRIDGE_CHROMIUM", "/usr/bin/chromium")


def _browser_or_skip():
    missing = [p for p in (CHROMEDRIVER, CHROMIUM) if not shutil.which(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        message = f"a headless browser is needed: missing {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def browser():
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", "--disable-default-apps"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    # An element looked for right after a click may be on the page still loading.
    driver.implicitly_wait(5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def dashboard(start_gateway, mock, tmp_path):
    database_url = f"sqlite://{tmp_path / 'dashboard.db'}"
    gw = start_gateway(extra_env={"AIBRIDGE_AUTH": "tokens", "AIBRIDGE_DATABASE_URL": database_url})

    def cli(*args: str) -> str:
        result = subprocess.run([str(_binary("AIBRIDGE_BIN", "aibridge")), *args],
                                env=_child_env({"AIBRIDGE_DATABASE_URL": database_url}),
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    cli("user", "create", "ops")
    cli("user", "create", "alice")
    gw.admin = cli("token", "create", "--user", "ops", "--admin")
    gw.alice = cli("token", "create", "--user", "alice")
    return gw


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def log_in(driver, gw) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{gw.url}/ui/")
    assert "/ui/login" in driver.current_url, "no session: the login page"
    shot(driver, "login")
    driver.find_element(By.CSS_SELECTOR, "form#login input[name=token]").send_keys(gw.admin)
    driver.find_element(By.CSS_SELECTOR, "form#login [type=submit]").click()
    wait_for(lambda: "/ui/login" not in driver.current_url, what="the login to go through")
    driver.find_element(By.CSS_SELECTOR, "table#keys")


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_dashboard_in_a_real_browser(browser, dashboard, mock):
    from selenium.webdriver.common.by import By

    gw = dashboard
    # Data to show: alice's request fails over (k0 cools for 120 s, k1 serves).
    mock.script("k0", [{"status": 429, "headers": [["retry-after", "120"]]}])
    client = anthropic.Anthropic(base_url=gw.anthropic_url, api_key=gw.alice, max_retries=0)
    reply = client.messages.create(model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "Hi there"}])
    assert reply.content[0].text

    log_in(browser, gw)

    # Keys: k0 cooling with a countdown that goes down; no key on the page.
    cooling = browser.find_element(By.CSS_SELECTOR, "tr.key[data-provider=anthropic][data-state=cooling]")
    countdown = cooling.find_element(By.CSS_SELECTOR, "span.countdown")
    first = int(countdown.text.strip().rstrip("s"))
    assert 100 < first <= 120, first
    wait_for(lambda: int(countdown.text.strip().rstrip("s")) < first, what="the countdown to go down")
    assert "sk-" not in browser.page_source and gw.admin not in browser.page_source
    shot(browser, "keys")

    # Re-enable the cooling key: back to valid.
    cooling.find_element(By.CSS_SELECTOR, "form.reenable button.reenable").click()
    wait_for(lambda: browser.find_elements(
        By.CSS_SELECTOR, "tr.key[data-provider=anthropic][data-index='0'][data-state=valid]"),
        what="the key to be valid again")

    # Requests: filter by user, open the request with two attempts.
    browser.find_element(By.CSS_SELECTOR, "a#nav-requests").click()
    form = browser.find_element(By.CSS_SELECTOR, "form#request-filters")
    form.find_element(By.NAME, "user").send_keys("alice")
    form.submit()
    wait_for(lambda: "user=alice" in browser.current_url, what="the filtered page")
    rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "table#requests tr.request"),
                    what="filtered requests")
    assert len(rows) == 1, [r.text for r in rows]
    shot(browser, "requests")
    rows[0].find_element(By.CSS_SELECTOR, "a.request-link").click()
    attempts = browser.find_elements(By.CSS_SELECTOR, "table#attempts tr.attempt")
    assert len(attempts) == 2
    assert attempts[0].find_element(By.CSS_SELECTOR, ".status").text.strip() == "429"
    assert attempts[1].find_element(By.CSS_SELECTOR, ".status").text.strip() == "200"
    assert "Hi there" in browser.find_element(By.CSS_SELECTOR, "details#prompt").get_attribute("textContent")
    shot(browser, "request")

    # Usage: a chart with data points drawn on a canvas.
    browser.find_element(By.CSS_SELECTOR, "a#nav-usage").click()
    canvas = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "div#usage-chart canvas"),
                      what="the chart's canvas")[0]
    assert canvas.size["width"] > 100 and canvas.size["height"] > 50
    painted = browser.execute_script(
        "const c = arguments[0]; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) n++; } return n;", canvas)
    assert painted > 500, f"the chart draws something ({painted} pixels)"
    data = json.loads(browser.find_element(By.ID, "usage-data").get_attribute("textContent"))
    assert data, "the chart has data points"
    assert "alice" in browser.find_element(By.CSS_SELECTOR, "table#usage-rows").text
    shot(browser, "usage")

    browser.find_element(By.CSS_SELECTOR, "a#nav-health").click()
    for section in ("providers", "key-state", "database", "overhead"):
        browser.find_element(By.ID, section)
    shot(browser, "health")

    # Nothing was loaded from anywhere but the gateway.
    foreign = [u for u in requested_urls(browser)
               if not u.startswith(gw.url) and not u.startswith(("data:", "about:"))]
    assert not foreign, foreign
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
