"""The workspace in a real browser: Debian's chromium driven through its chromedriver
(installed by `make browser`, which `make test` runs). An analyst signs in, searches a
seller, opens its dossier, follows "why linked" and "why this form"; and on every page a
recipient that receives an e-mail hashed visits, that e-mail never appears in clear.

Set ACTION_SCREENSHOTS=docs/images to write the screenshots docs/analysts.md shows."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from consumers.workspace import Workspace
from tests.feed_stores import Deliver, ServedApp
from tests.unit.test_workspace import correlated_store

SECRET = "browser secret"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are missing: run `make browser`")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        # The machine's network is closed: no background calls to anyone's servers.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def served(tmp_path: Path, deliver: Deliver) -> Iterator[dict[str, ServedApp]]:
    """The IPR Center's workspace (clear values) and platform-b's (e-mails hashed)."""
    running: dict[str, ServedApp] = {}
    workspaces = []
    for member in ("ipr-center", "platform-b"):
        path = tmp_path / f"{member}.sqlite"
        correlated_store(path, deliver, member).close()
        workspace = Workspace(path, member, secret=SECRET)
        workspaces.append(workspace)
        running[member] = ServedApp(workspace.app())
    try:
        yield running
    finally:
        for app in running.values():
            app.stop()
        for workspace in workspaces:
            workspace.close()


def _shot(driver: webdriver.Chrome, name: str) -> None:
    folder = os.environ.get("ACTION_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def _click(driver: webdriver.Chrome, element: WebElement) -> None:
    """Click what navigates, and wait until the next page replaced this one."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 15).until(staleness_of(page))


def _forms(driver: webdriver.Chrome) -> dict[str, str]:
    """Field path -> its form, from a "why this form" page."""
    return {
        row.find_element(By.CSS_SELECTOR, "td code").text: row.find_element(
            By.CSS_SELECTOR, "span.form"
        ).text
        for row in driver.find_elements(By.CSS_SELECTOR, "table.forms tbody tr")
    }


def _sign_in(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url + "search")
    assert driver.current_url.endswith("/login"), "a page asks for the login first"
    driver.find_element(By.ID, "password").send_keys(SECRET)
    _click(driver, driver.find_element(By.CSS_SELECTOR, "form.login button"))
    assert driver.find_element(By.TAG_NAME, "h1").text == "Do we know this seller?"


def _search(driver: webdriver.Chrome, typed: str) -> None:
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(typed)
    _click(driver, driver.find_element(By.CSS_SELECTOR, "form.search button"))


def test_search_dossier_why_linked_and_why_this_form(
    browser: webdriver.Chrome, served: dict[str, ServedApp]
) -> None:
    url = served["ipr-center"].url
    _sign_in(browser, url)
    _search(browser, "+86 138 0013 8000")  # as an analyst types it
    links = browser.find_elements(By.CSS_SELECTOR, "a.dossier")
    assert len(links) == 3
    _shot(browser, "search")
    _click(browser, links[0])
    assert browser.find_element(By.TAG_NAME, "h1").text == "Seller dossier"
    assert "from 3 source(s)" in browser.find_element(By.CSS_SELECTOR, "p.summary").text
    _shot(browser, "dossier")
    reasons = browser.find_elements(By.CSS_SELECTOR, "ul.why-linked li[id^=linked-]")
    assert len(reasons) == 2
    assert any("+8613800138000" in reason.text for reason in reasons)
    _click(browser, reasons[0].find_element(By.TAG_NAME, "a"))  # follow why linked
    assert browser.find_element(By.TAG_NAME, "h1").text == "Seller dossier"
    _click(browser, browser.find_element(By.CSS_SELECTOR, "a.why-form"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Why this form"
    forms = _forms(browser)
    assert forms["seller.phone"] == "kept"
    _shot(browser, "why-this-form")
    browser.get(url + "correlations")
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.sellers tbody tr")) == 1
    _shot(browser, "correlations")


def test_a_hashed_identifier_never_appears_in_clear_on_any_page(
    browser: webdriver.Chrome, served: dict[str, ServedApp]
) -> None:
    """platform-b receives platform-a's e-mails as match tokens: not one page it opens
    holds the e-mail, and the delivery's form says it was hashed."""
    url = served["platform-b"].url
    _sign_in(browser, url)
    visited: list[str] = []

    def page() -> str:
        visited.append(browser.current_url)
        return browser.page_source

    _search(browser, "S-77")
    assert "x@repeat.example" not in page()
    _click(browser, browser.find_element(By.CSS_SELECTOR, "a.dossier"))
    assert "x@repeat.example" not in page()
    _click(browser, browser.find_element(By.CSS_SELECTOR, "a.why-form"))
    source = page()
    assert "x@repeat.example" not in source
    forms = _forms(browser)
    assert forms["seller.email"] == "hashed"
    browser.get(url + "correlations")
    assert "x@repeat.example" not in page()
    _search_page = url + "search"
    browser.get(_search_page)
    _search(browser, "x@repeat.example")  # the clear value finds nothing: only the token is here
    assert "Nothing in this store holds it" in page()
    assert len(visited) == 5
