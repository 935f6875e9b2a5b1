"""Browser tests: the macros and the vendored htmx in Debian's Chromium, driven by Playwright."""

from __future__ import annotations

import threading
import typing as t

import browser_app
import pytest
from werkzeug.serving import make_server

if t.TYPE_CHECKING:
    from playwright.sync_api import Browser
    from playwright.sync_api import Page

# How long to wait for a swap: generous, a loaded CI machine is slow.
TIMEOUT = 5_000


@pytest.fixture(scope="module")
def server() -> t.Iterator[str]:
    """Serve ``browser_app`` on a free local port; yield its base URL."""
    httpd = make_server("127.0.0.1", 0, browser_app.create_app(), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join()
    httpd.server_close()


@pytest.fixture
def page(browser: Browser, server: str) -> t.Iterator[Page]:
    """A fresh page (own cookies) on the app's index, with a marker a full page load would lose."""
    browser_app.NOTES.clear()
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server + "/")
    page.wait_for_function("window.htmx !== undefined")
    page.evaluate("window.marker = 'same page'")
    yield page
    context.close()
    assert errors == []


def same_page(page: Page) -> bool:
    return bool(page.evaluate("window.marker === 'same page'"))


def test_invalid_shows_errors_inline(page: Page) -> None:
    page.click("button[type=submit]")
    error = page.locator("#title-errors")
    error.wait_for()
    assert error.inner_text() == "This field is required."
    assert page.get_attribute("#title", "aria-invalid") == "true"
    assert page.locator("form").count() == 1
    assert same_page(page)


def test_fix_and_submit_swaps_the_fragment(page: Page) -> None:
    page.click("button[type=submit]")
    page.locator("#title-errors").wait_for()
    page.fill("#title", "Milk")
    page.click("button[type=submit]")
    page.locator("#saved").wait_for()
    assert page.inner_text("#saved") == "Saved Milk."
    assert page.locator("form").count() == 0
    assert browser_app.NOTES == ["Milk"]
    assert same_page(page)


def test_conflict_shows_the_flash(page: Page) -> None:
    page.fill("#title", "taken")
    page.click("button[type=submit]")
    alert = page.locator("form [role=alert]")
    alert.wait_for()
    assert alert.inner_text() == "A note with that title exists."
    assert page.input_value("#title") == "taken"
    assert browser_app.NOTES == []
    assert same_page(page)


def test_live_validation_while_typing(page: Page) -> None:
    page.locator("#title").press_sequentially("ab")
    page.locator("#title").press("Backspace")
    page.locator("#title").press("Backspace")
    error = page.locator("#title-errors")
    error.wait_for()
    assert error.inner_text() == "This field is required."
    assert page.get_attribute("#title", "aria-invalid") == "true"
    assert page.locator("#title:focus").count() == 1
    assert browser_app.NOTES == []
    assert same_page(page)


def test_live_validation_clears_the_error(page: Page) -> None:
    page.locator("#title").press_sequentially("a")
    page.locator("#title").press("Backspace")
    page.locator("#title-errors").wait_for()
    page.locator("#title").press_sequentially("Jam")
    page.locator("#title-errors").wait_for(state="detached")
    assert page.get_attribute("#title", "aria-invalid") is None
    assert page.input_value("#title") == "Jam"


def test_submit_disabled_in_flight(page: Page) -> None:
    page.fill("#title", "Eggs")
    page.evaluate(
        """() => {
            window.disabledInFlight = null;
            document.body.addEventListener("htmx:before:request", () => {
                setTimeout(() => {
                    window.disabledInFlight = document.querySelector("button[type=submit]").disabled;
                }, 0);
            });
        }"""
    )
    page.click("button[type=submit]")
    page.locator("#saved").wait_for()
    assert page.evaluate("window.disabledInFlight") is True


def test_csrf_token_flows_through_htmx(page: Page) -> None:
    page.fill("#title", "Bread")
    page.click("button[type=submit]")
    page.locator("#saved").wait_for()
    assert browser_app.NOTES == ["Bread"]


def test_csrf_tampered_token_shows_the_error(page: Page) -> None:
    page.evaluate(
        """() => {
            document.querySelector("input[name=csrf_token]").value = "tampered";
            document.querySelector("form").setAttribute("hx-headers", '{"X-CSRFToken": "tampered"}');
        }"""
    )
    page.fill("#title", "Bread")
    page.click("button[type=submit]")
    alert = page.locator("form [role=alert]")
    alert.wait_for()
    assert alert.inner_text() == "The CSRF token is invalid. Submit the form again."
    assert page.input_value("#title") == "Bread"
    assert browser_app.NOTES == []
    assert same_page(page)
    # The re-rendered form carries a good token again.
    page.click("button[type=submit]")
    page.locator("#saved").wait_for()
    assert browser_app.NOTES == ["Bread"]


def test_javascript_off_still_works(browser: Browser, server: str) -> None:
    browser_app.NOTES.clear()
    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    page.goto(server + "/")
    page.click("button[type=submit]")
    assert page.inner_text("#title-errors") == "This field is required."
    page.fill("#title", "Tea")
    page.click("button[type=submit]")
    page.wait_for_url(server + "/")
    assert page.inner_text("#notes") == "Tea"
    context.close()
