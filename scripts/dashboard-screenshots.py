#!/usr/bin/env python3
"""The README's dashboard screenshots (docs/dashboard-*.png), taken from `aibridge demo` in
headless Chromium. Needs Debian's chromium + chromium-driver and selenium (the SDK test venv has
it): tests/sdk/.venv-current/bin/python scripts/dashboard-screenshots.py [AIBRIDGE_BIN]"""

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ROOT = Path(__file__).resolve().parent.parent
binary = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "debug" / "aibridge")
demo = subprocess.Popen([binary, "demo", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, text=True)
try:
    dashboard = None
    for line in demo.stdout:
        match = re.search(r"dashboard:\s+(\S+)", line)
        if match:
            dashboard = match.group(1)
        if "OPENAI_BASE_URL" in line:
            break
    assert dashboard, "no dashboard URL in the demo's output"
    base = dashboard.removesuffix("/ui/")
    # A little more traffic: two models, blocking and streamed.
    for model, stream in [("claude-sonnet-4-5", False), ("claude-haiku-4-5", True),
                          ("claude-sonnet-4-5", True), ("claude-haiku-4-5", False)]:
        body = json.dumps({"model": model, "max_tokens": 64, "stream": stream,
                           "messages": [{"role": "user", "content": "Summarise the key pool's state"}]})
        request = urllib.request.Request(f"{base}/anthropic/v1/messages", data=body.encode(),
                                         headers={"content-type": "application/json",
                                                  "anthropic-version": "2023-06-01"})
        urllib.request.urlopen(request, timeout=30).read()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,760"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.implicitly_wait(5)
    try:
        for name, path in [("keys", "keys"), ("usage", "usage?since=7d&by=model"),
                           ("requests", "requests"), ("health", "health")]:
            driver.get(f"{dashboard}{path}")
            time.sleep(0.5)
            driver.save_screenshot(str(ROOT / "docs" / f"dashboard-{name}.png"))
        driver.get(f"{dashboard}requests")
        driver.find_elements(By.CSS_SELECTOR, "a.request-link")[-1].click()
        driver.find_element(By.CSS_SELECTOR, "table#attempts")
        driver.save_screenshot(str(ROOT / "docs" / "dashboard-request.png"))
    finally:
        driver.quit()
finally:
    demo.terminate()
    demo.wait(timeout=15)
print("written: docs/dashboard-{keys,usage,requests,request,health}.png")
