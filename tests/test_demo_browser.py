"""The demo in Debian's Chromium: the htmx board, its background job on a real Celery worker, the
board with JavaScript off, and the JSON API called from a page on another origin (CORS)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import typing as t

import flask
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from demo_app import create_app

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from wsgiref.types import StartResponse
    from wsgiref.types import WSGIApplication
    from wsgiref.types import WSGIEnvironment

    from playwright.sync_api import Browser
    from playwright.sync_api import BrowserContext
    from playwright.sync_api import Page

# How long to wait for a swap: generous, a loaded CI machine is slow.
TIMEOUT = 10_000
ROOT = pathlib.Path(__file__).resolve().parent.parent

# How long the worker may take to start and run the job.
WORKER_TIMEOUT = 30_000
SCREENSHOT = ROOT / "docs" / "demo-screenshot.png"


class Served:
    """A WSGI app on a free local port, in a thread; records the method and path of each request."""

    def __init__(self, app: WSGIApplication) -> None:
        self.requests: list[tuple[str, str]] = []
        #: Seconds each live-validation request is held, to widen the window a user types into.
        self.validation_delay = 0.0
        #: Seconds each other POST (a submission) is held, to widen the window it is in flight.
        self.submit_delay = 0.0
        self._app = app
        self._httpd = make_server("127.0.0.1", 0, self._record, threaded=True)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        if "HTTP_X_COMMANDS_VALIDATE" in environ:
            time.sleep(self.validation_delay)
        elif environ["REQUEST_METHOD"] == "POST":
            time.sleep(self.submit_delay)
        return self._app(environ, start_response)

    def close(self) -> None:
        self._httpd.shutdown()
        self._thread.join()
        self._httpd.server_close()


@dataclasses.dataclass
class Demo:
    """The demo app served on a fresh SQLite file, with an embedded broker of its own."""

    app: flask.Flask
    served: Served
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.served.url


@pytest.fixture
def demo(tmp_path: pathlib.Path) -> Iterator[Demo]:
    broker = {
        "data_folder_in": str(tmp_path / "broker"),
        "data_folder_out": str(tmp_path / "broker"),
        "control_folder": str(tmp_path / "control"),
        "polling_interval": 0.1,
    }
    for folder in ("broker", "control"):
        (tmp_path / folder).mkdir()
    database = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    # What a worker process reads (create_app reads FLASK_-prefixed variables).
    env = {
        "FLASK_SQLALCHEMY_DATABASE_URI": database,
        "FLASK_SECRET_KEY": "browser tests",
        "FLASK_CELERY__broker_url": "filesystem://localhost//",
        "FLASK_CELERY__broker_transport_options": json.dumps(broker),
    }
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": database,
            "SECRET_KEY": "browser tests",
            "CELERY": {"broker_url": "filesystem://localhost//", "broker_transport_options": broker},
        }
    )
    served = Served(app)
    yield Demo(app, served, env)
    served.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1000, "height": 720})
    context.set_default_timeout(TIMEOUT)
    yield context
    context.close()


def wait_until(page: Page, expression: str, timeout: float = TIMEOUT) -> None:
    """``page.wait_for_function(expression)``, polled from here: Playwright polls in the page with an
    eval, which the demo's Content-Security-Policy (no 'unsafe-eval') refuses."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} ms: {expression}"
        page.wait_for_timeout(50)


def open_board(context: BrowserContext, demo: Demo, errors: list[str]) -> Page:
    """A page on the board; its JavaScript errors go to ``errors``."""
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(demo.url + "/")
    wait_until(page, "window.htmx !== undefined")
    # Tagged so that a test can tell a swap from a full page load.
    page.evaluate("window.sameDocument = true")
    return page


@pytest.fixture
def page(context: BrowserContext, demo: Demo) -> Iterator[Page]:
    """The board in a page that must raise no JavaScript error and never reload."""
    errors: list[str] = []
    page = open_board(context, demo, errors)
    yield page
    assert errors == []
    assert page.evaluate("window.sameDocument === true"), "a full page load happened where htmx should swap"


def add_todo(page: Page, title: str) -> None:
    page.fill("#title", title)
    page.press("#title", "Enter")
    page.locator(".todo .title", has_text=title).wait_for()


def focused(page: Page) -> str:
    """The id of the element that has the focus."""
    return str(page.evaluate("document.activeElement.id"))


def item(page: Page, title: str) -> t.Any:
    return page.locator(".todo", has=page.locator(".title", has_text=title))


def test_add(page: Page) -> None:
    add_todo(page, "Buy milk")
    assert page.input_value("#title") == ""
    assert focused(page) == "title"
    assert page.inner_text(".count") == "1 item left"


def test_live_validation_while_typing(page: Page) -> None:
    page.type("#title", "a")
    page.keyboard.press("Backspace")
    error = page.locator("#title-errors")
    error.wait_for()
    assert error.inner_text() == "Give the todo a title."
    assert page.get_attribute("#title", "aria-invalid") == "true"
    page.keyboard.type("Bread")
    error.wait_for(state="detached")
    assert page.input_value("#title") == "Bread"
    assert focused(page) == "title"
    assert page.locator(".todo").count() == 0


def is_validation(message: t.Any) -> bool:
    """Whether a Playwright request or response is a live-validation request's."""
    request = getattr(message, "request", message)
    return "x-commands-validate" in request.headers


def test_live_validation_keeps_what_is_typed_meanwhile(page: Page, demo: Demo) -> None:
    demo.served.validation_delay = 0.5
    page.click("#title")
    with page.expect_response(is_validation):
        with page.expect_request(is_validation):
            page.keyboard.type("ab")
        page.keyboard.type("cd")  # while the server still validates "ab"
    with page.expect_response(is_validation):  # the validation of "abcd"; "ab" was swapped in by now
        pass
    assert page.input_value("#title") == "abcd"
    assert page.evaluate("[document.activeElement.id, document.activeElement.selectionStart]") == ["title", 4]


def test_live_validation_keeps_how_the_field_was_rendered(page: Page, demo: Demo) -> None:
    before = page.evaluate("document.querySelector('#title').outerHTML")
    page.type("#title", "a")
    page.keyboard.press("Backspace")
    page.locator("#title-errors").wait_for()
    title = page.locator("#title")
    assert title.get_attribute("placeholder") == "Buy milk"
    assert title.get_attribute("hx-trigger") == "change delay:250ms, input delay:400ms"
    assert title.get_attribute("aria-invalid") == "true"
    # Arrow and Shift keys change nothing: no request.
    count = sum(1 for method, _ in demo.served.requests if method == "POST")
    for key in ("ArrowLeft", "ArrowRight", "Shift", "Home"):
        page.keyboard.press(key)
    page.wait_for_timeout(700)
    assert sum(1 for method, _ in demo.served.requests if method == "POST") == count
    page.keyboard.type("Bread")
    page.locator("#title-errors").wait_for(state="detached")
    after = page.evaluate("document.querySelector('#title').outerHTML")
    strip = r"""(html) => html.replace(/ (value|hx-headers|data-htmx-powered|aria-[a-z]+)="[^"]*"/g, "")"""

    def bare(html: str) -> str:
        return str(page.evaluate(f"({strip})({json.dumps(html)})"))

    assert bare(after) == bare(before)


# Each violation of the page's Content-Security-Policy (an eval, an inline script, handler or style).
RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective}: ${event.blockedURI} ${event.sample}`);
});
"""


def test_board_runs_under_its_content_security_policy(context: BrowserContext, demo: Demo) -> None:
    """No 'unsafe-eval' or 'unsafe-inline' in the demo's policy, and nothing on the board needs them."""
    context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: console.append(str(error)))
    response = page.goto(demo.url + "/")
    assert response is not None
    assert "unsafe" not in response.headers["content-security-policy"]
    wait_until(page, "window.htmx !== undefined")
    add_todo(page, "Buy milk")
    # Live validation, and a click on Add that blurs the field: the validation is dropped.
    page.type("#title", "a")
    page.keyboard.press("Backspace")
    page.locator("#title-errors").wait_for()
    page.keyboard.type("Bread")
    page.locator("#title-errors").wait_for(state="detached")
    page.get_by_role("button", name="Add").click()
    item(page, "Bread").wait_for()
    page.get_by_role("button", name="Done: Buy milk").click()
    page.locator(".todo.done").wait_for()
    item(page, "Bread").get_by_role("link", name="Edit").click()
    page.fill("#edit-2-title", "Rye bread")
    page.get_by_role("button", name="Save").click()
    item(page, "Rye bread").wait_for()
    page.get_by_role("button", name="Delete “Rye bread”").click()
    page.get_by_role("button", name="Undo").click()
    item(page, "Rye bread").wait_for()
    assert page.evaluate("window.cspViolations") == []
    assert console == []


@pytest.mark.parametrize("how", ["click", "enter"])
def test_one_post_per_add(page: Page, demo: Demo, how: str) -> None:
    page.fill("#title", "Only one request")
    demo.served.requests.clear()
    if how == "click":
        page.get_by_role("button", name="Add").click()
    else:
        page.press("#title", "Enter")
    item(page, "Only one request").wait_for()
    page.wait_for_timeout(700)  # room for a delayed validation, had one been sent
    assert [r for r in demo.served.requests if r[0] == "POST"] == [("POST", "/items")]


def test_no_validation_while_a_slow_submission_is_in_flight(page: Page, demo: Demo) -> None:
    # The field's input (400 ms) and blur (250 ms) validations come due while the add is in
    # flight: commands.js drops them.
    demo.served.submit_delay = 1.0
    demo.served.requests.clear()
    page.fill("#title", "Slow one")
    page.get_by_role("button", name="Add").click()
    item(page, "Slow one").wait_for()
    page.wait_for_timeout(700)
    assert [r for r in demo.served.requests if r[0] == "POST"] == [("POST", "/items")]


def test_inline_edit(page: Page) -> None:
    add_todo(page, "Buy milk")
    item(page, "Buy milk").get_by_role("link", name="Edit").click()
    title = page.locator("#edit-1-title")
    title.wait_for()
    assert focused(page) == "edit-1-title"
    title.fill("Buy oat milk")
    page.fill("#edit-1-order", "3")
    page.get_by_role("button", name="Save").click()
    item(page, "Buy oat milk").wait_for()
    assert item(page, "Buy oat milk").locator(".order").inner_text() == "#3"
    assert page.locator(".edit-form").count() == 0
    assert focused(page) == "edit-link-1"


def test_inline_edit_blank_title_shows_the_error(page: Page) -> None:
    add_todo(page, "Buy milk")
    item(page, "Buy milk").get_by_role("link", name="Edit").click()
    page.fill("#edit-1-title", "  ")
    page.get_by_role("button", name="Save").click()
    page.locator("#edit-1-title-errors").wait_for()
    assert page.inner_text("#edit-1-title-errors") == "Give the todo a title."
    page.keyboard.press("Escape")
    page.locator(".edit-form").wait_for(state="detached")
    assert page.locator(".todo .title").inner_text() == "Buy milk"


def test_toggle(page: Page) -> None:
    add_todo(page, "Buy milk")
    page.focus("#toggle-1")
    page.keyboard.press("Enter")
    page.locator(".todo.done").wait_for()
    assert page.get_attribute(".check", "aria-pressed") == "true"
    assert page.inner_text(".count") == "0 items left"
    assert focused(page) == "toggle-1"  # the board was replaced, the focus stays put
    page.get_by_role("button", name="Done: Buy milk").click()
    page.locator(".todo.done").wait_for(state="detached")
    assert page.inner_text(".count") == "1 item left"


def test_delete_then_undo(page: Page) -> None:
    add_todo(page, "Buy milk")
    page.get_by_role("button", name="Delete “Buy milk”").click()
    page.locator(".undo", has_text="Deleted “Buy milk”.").wait_for()
    assert page.locator(".todo").count() == 0
    assert focused(page) == "undo"
    assert page.inner_text("#announcer") == "Deleted “Buy milk”."
    page.keyboard.press("Enter")
    item(page, "Buy milk").wait_for()
    assert page.locator(".undo").count() == 0
    assert focused(page) == "toggle-1"


def test_double_click_on_add_creates_one_todo(page: Page, demo: Demo) -> None:
    page.fill("#title", "Only once")
    page.get_by_role("button", name="Add").dblclick()
    item(page, "Only once").wait_for()
    page.wait_for_timeout(500)  # room for a second request, had one been sent
    assert page.locator(".todo").count() == 1
    assert len(demo.app.test_client().get("/todos").json or []) == 1


def test_two_pages_editing_one_todo_the_second_sees_the_conflict(context: BrowserContext, demo: Demo) -> None:
    errors: list[str] = []
    first = open_board(context, demo, errors)
    add_todo(first, "Buy milk")
    assert context.browser is not None
    other_context = context.browser.new_context()  # another browser: its own session
    other_context.set_default_timeout(TIMEOUT)
    second = open_board(other_context, demo, errors)
    for page in (first, second):
        page.reload()
        item(page, "Buy milk").get_by_role("link", name="Edit").click()
        page.locator("#edit-1-title").wait_for()
    first.fill("#edit-1-title", "Buy oat milk")
    first.get_by_role("button", name="Save").click()
    item(first, "Buy oat milk").wait_for()

    second.fill("#edit-1-title", "Buy soy milk")
    second.get_by_role("button", name="Save").click()
    notice = second.locator(".commands-conflict")
    notice.wait_for()
    assert notice.get_attribute("role") == "alert"
    assert "This todo was changed elsewhere." in notice.inner_text()
    assert "Title is now “Buy oat milk”." in notice.inner_text()
    assert second.inner_text("#announcer") == "This todo was changed elsewhere."
    assert second.locator(".commands-flash-conflict").count() == 0  # said once, in the form
    # The form stays open with this tab's text, and the focus in it.
    assert second.input_value("#edit-1-title") == "Buy soy milk"
    assert focused(second) == "edit-1-title"
    # Saving again puts it in place of the other tab's title.
    second.get_by_role("button", name="Save").click()
    item(second, "Buy soy milk").wait_for()
    assert second.locator(".edit-form").count() == 0
    first.reload()
    assert first.locator(".todo .title").inner_text() == "Buy soy milk"
    # Take theirs: the form shows the current title.
    first.get_by_role("link", name="Edit").click()
    first.fill("#edit-1-title", "Mine again")
    second.get_by_role("link", name="Edit").click()
    second.fill("#edit-1-title", "Theirs")
    second.get_by_role("button", name="Save").click()
    item(second, "Theirs").wait_for()
    first.get_by_role("button", name="Save").click()
    first.locator(".commands-conflict").wait_for()
    first.get_by_role("link", name="take theirs").click()
    first.locator("#edit-1-title").wait_for()
    assert first.input_value("#edit-1-title") == "Theirs"
    assert first.locator(".commands-conflict").count() == 0
    assert errors == []
    other_context.close()


@pytest.fixture
def phone(browser: Browser, demo: Demo) -> Iterator[Page]:
    """The board on a 390 px wide touch screen."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    context.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    page = open_board(context, demo, errors)
    yield page
    assert errors == []
    context.close()


def fits(page: Page) -> bool:
    """Whether the page is no wider than the screen (nothing to scroll sideways)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_phone_board_and_activity_fit_and_targets_are_44px(phone: Page, demo: Demo) -> None:
    add_todo(phone, "Buy milk")
    assert fits(phone)
    for selector in ("#toggle-1", "#edit-link-1", "#delete-1", "#add-form [type=submit]"):
        box = phone.locator(selector).bounding_box()
        assert box is not None
        assert box["width"] >= 44, selector
        assert box["height"] >= 44, selector
    # The header's links stay on one line each.
    for link in phone.locator(".site-header nav a").all():
        box = link.bounding_box()
        assert box is not None
        assert box["height"] < 30, link.inner_text()
    phone.get_by_role("link", name="Activity").click()
    phone.locator(".activity").wait_for()
    assert fits(phone)
    assert phone.locator(".activity td", has_text="Buy milk").is_visible()
    box = phone.locator(".activity td", has_text="Buy milk").bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= 390


def test_enter_twice_after_an_add_adds_one_and_shows_no_error(page: Page, demo: Demo) -> None:
    page.fill("#title", "Buy milk")
    page.press("#title", "Enter")
    item(page, "Buy milk").wait_for()
    demo.served.requests.clear()
    page.press("#title", "Enter")
    page.wait_for_timeout(600)
    assert page.locator("#title-errors").count() == 0
    assert [r for r in demo.served.requests if r[0] == "POST"] == []
    # Once something is typed, an empty Enter is a real submission again, with its error.
    page.type("#title", "x")
    page.press("#title", "Backspace")
    page.press("#title", "Enter")
    page.locator("#title-errors").wait_for()


def test_long_paste_is_cut_with_a_word_and_the_counter_shows_near_the_limit(page: Page) -> None:
    hint = page.locator("#add-form .length-hint")
    assert hint.is_hidden()
    page.fill("#title", "x" * 185)
    page.type("#title", "y")
    assert hint.inner_text() == "14 characters left."
    page.fill("#title", "")
    page.evaluate("""() => {
        const input = document.querySelector("#title");
        input.focus();
        const data = new DataTransfer();
        data.setData("text/plain", "z".repeat(250));
        input.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true}));
        input.value = "z".repeat(200);  // what the browser inserts, maxlength applied
    }""")
    wait_until(page, "document.querySelector('#add-form .length-hint').textContent !== ''")
    assert hint.inner_text() == "The pasted text was cut to 200 characters, the limit."


@pytest.mark.parametrize("width", [390, 1000])
def test_order_error_takes_one_line(browser: Browser, demo: Demo, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 800})
    context.set_default_timeout(TIMEOUT)
    page = open_board(context, demo, [])
    add_todo(page, "Buy milk")
    item(page, "Buy milk").get_by_role("link", name="Edit").click()
    page.fill("#edit-1-order", "99999999999")
    page.get_by_role("button", name="Save").click()
    error = page.locator("#edit-1-order-errors")
    error.wait_for()
    line_height = float(
        page.evaluate(
            "parseFloat(getComputedStyle(document.querySelector('#edit-1-order-errors')).lineHeight)"
        )
    )
    box = error.bounding_box()
    assert box is not None
    assert box["height"] <= 2 * line_height + 1, error.inner_text()
    assert fits(page)
    context.close()


class Worker:
    """``celery -A demo_app.worker worker`` on the demo's database and broker, in its own process group."""

    def __init__(self, env: dict[str, str], log: pathlib.Path) -> None:
        self.log = log
        command = [sys.executable, "-m", "celery", "-A", "demo_app.worker", "worker", "--pool=solo"]
        command += ["--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel=INFO"]
        with open(log, "w") as output:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def test_clear_completed_runs_on_a_worker(page: Page, demo: Demo, tmp_path: pathlib.Path) -> None:
    worker = Worker(demo.env, tmp_path / "worker.log")
    try:
        add_todo(page, "Buy milk")
        add_todo(page, "Walk the dog")
        page.get_by_role("button", name="Done: Buy milk").click()
        page.locator(".todo.done").wait_for()
        page.get_by_role("button", name="Clear completed (1)").click()
        status = page.locator(".job")
        status.wait_for()
        assert "Clearing completed todos in the background…" in status.inner_text()
        # Progress and outcome beside the button that started it, not at the top of the board.
        assert page.locator(".board-footer .job").count() == 1
        done = page.locator(".board-footer .job-result")
        done.wait_for(timeout=WORKER_TIMEOUT)
        assert done.inner_text() == "Cleared 1 completed todo."
        assert page.inner_text("#announcer") == "Cleared 1 completed todo."
        assert page.locator(".job").count() == 0
        assert page.locator(".todo .title").all_inner_texts() == ["Walk the dog"]
    finally:
        worker.stop()
    assert "succeeded" in (tmp_path / "worker.log").read_text()


@pytest.mark.parametrize("width", [390, 1000])
def test_conflict_keeps_the_text_with_javascript_off(browser: Browser, demo: Demo, width: int) -> None:
    contexts = [
        browser.new_context(java_script_enabled=False, viewport={"width": width, "height": 720}) for _ in "ab"
    ]
    first, second = (c.new_page() for c in contexts)
    first.goto(demo.url + "/")
    first.fill("#title", "Buy milk")
    first.get_by_role("button", name="Add").click()
    for page in (first, second):
        page.bring_to_front()
        page.goto(demo.url + "/")
        page.get_by_role("link", name="Edit “Buy milk”").click()
        page.wait_for_url("**/items/1/edit")
        # The edit form has the focus (not the add box): focusing scrolls the item into view.
        wait_until(page, "document.activeElement.id === 'edit-1-title'")
    first.fill("#edit-1-title", "Edited in tab A")
    first.get_by_role("button", name="Save").click()
    second.bring_to_front()
    second.fill("#edit-1-title", "Edited in tab B")
    second.get_by_role("button", name="Save").click()
    notice = second.locator(".commands-conflict")
    assert "Title is now “Edited in tab A”." in notice.inner_text()
    assert second.input_value("#edit-1-title") == "Edited in tab B"
    wait_until(second, "document.activeElement.id === 'edit-1-title'")
    second.get_by_role("button", name="Save").click()
    item(second, "Edited in tab B").wait_for()
    for context in contexts:
        context.close()


def test_board_works_with_javascript_off(browser: Browser, demo: Demo) -> None:
    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    page.goto(demo.url + "/")
    page.get_by_role("button", name="Add").click()
    assert page.inner_text("#title-errors") == "Give the todo a title."
    page.fill("#title", "Buy milk")
    page.get_by_role("button", name="Add").click()
    item(page, "Buy milk").wait_for()
    assert page.url == demo.url + "/"

    page.get_by_role("button", name="Done: Buy milk").click()
    page.locator(".todo.done").wait_for()
    item(page, "Buy milk").get_by_role("link", name="Edit").click()
    page.fill("#edit-1-title", "Buy oat milk")
    page.get_by_role("button", name="Save").click()
    item(page, "Buy oat milk").wait_for()
    page.get_by_role("button", name="Delete “Buy oat milk”").click()
    page.get_by_role("button", name="Undo").click()
    item(page, "Buy oat milk").wait_for()
    context.close()


def test_screenshot(page: Page, tmp_path: pathlib.Path) -> None:
    """The README's picture of the board, taken into tmp_path so a test run changes no tracked file.

    ``COMMANDS_UPDATE_SCREENSHOT=1 .venv/bin/pytest tests/test_demo_browser.py -k screenshot``
    writes it to docs/ instead.
    """
    for title in ("Write the release notes", "Review the idempotency PR", "Buy oat milk", "Book the venue"):
        add_todo(page, title)
    page.get_by_role("button", name="Done: Buy oat milk").click()
    page.locator(".todo.done").wait_for()
    item(page, "Review the idempotency PR").get_by_role("link", name="Edit").click()
    page.locator("#edit-2-title").wait_for()
    page.fill("#edit-2-title", "")
    page.get_by_role("button", name="Save").click()
    page.locator("#edit-2-title-errors").wait_for()
    page.fill("#title", "Water the plants")
    page.locator("body").click(position={"x": 5, "y": 5})  # blur: no caret in the picture
    target = SCREENSHOT if os.environ.get("COMMANDS_UPDATE_SCREENSHOT") == "1" else tmp_path / SCREENSHOT.name
    # Down to the end of <main>: the footer names this browser's random visitor, and leaving it
    # out keeps the picture the same from run to run (no change for git to see).
    bottom = page.evaluate("document.querySelector('main').getBoundingClientRect().bottom + 24")
    page.screenshot(path=str(target), clip={"x": 0, "y": 0, "width": 1000, "height": bottom})
    assert target.stat().st_size > 10_000


CLIENT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Todo-Backend client</title></head>
<body><pre id="out"></pre>
<script>
const root = %(api)s;
const json = {"Content-Type": "application/json"};
async function call(method, url, body, headers) {
  const init = {method, headers: {...(body ? json : {}), ...(headers || {})}};
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(url, init);
  const text = await response.text();
  return {status: response.status, type: response.headers.get("Content-Type"),
          location: response.headers.get("Location"), body: text ? JSON.parse(text) : null};
}
(async () => {
  const steps = {};
  steps.clear = await call("DELETE", root);
  steps.create = await call("POST", root, {title: "From another origin", order: 7},
                            {"Idempotency-Key": "cors-create-1"});
  const url = steps.create.body.url;
  steps.patch = await call("PATCH", url, {completed: true, title: "Done elsewhere"});
  steps.list = await call("GET", root);
  steps.invalid = await call("POST", root, {completed: "yes"});
  steps.remove = await call("DELETE", url);
  steps.gone = await call("GET", url);
  document.getElementById("out").textContent = JSON.stringify(steps);
  document.body.dataset.done = "yes";
})().catch((error) => { document.body.dataset.done = "error: " + error; });
</script></body></html>
"""


def test_api_from_another_origin(context: BrowserContext, demo: Demo) -> None:
    html = CLIENT_PAGE % {"api": json.dumps(demo.url + "/todos")}

    def client_app(environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        return Response(html, mimetype="text/html")(environ, start_response)

    other = Served(client_app)
    try:
        assert other.url != demo.url
        page = context.new_page()
        page.goto(other.url + "/")
        page.wait_for_function("document.body.dataset.done !== undefined")
        assert page.evaluate("document.body.dataset.done") == "yes"
        steps = json.loads(page.inner_text("#out"))
    finally:
        other.close()
    assert steps["clear"]["status"] == 204
    created = steps["create"]
    assert created["status"] == 201
    assert created["body"]["completed"] is False
    assert created["body"]["order"] == 7
    assert created["location"] == created["body"]["url"] == demo.url + "/todos/1"
    assert steps["patch"]["body"]["completed"] is True
    assert steps["patch"]["body"]["title"] == "Done elsewhere"
    assert [todo["title"] for todo in steps["list"]["body"]] == ["Done elsewhere"]
    assert steps["invalid"]["status"] == 422
    assert steps["invalid"]["type"] == "application/problem+json"
    assert steps["invalid"]["body"]["errors"] == {
        "title": ["Give the todo a title."],
        "completed": ["Not a valid value."],
    }
    assert steps["remove"]["status"] == 204
    assert steps["gone"]["status"] == 404
    assert steps["gone"]["type"] == "application/problem+json"
    # JSON bodies and the Idempotency-Key header are not CORS-safelisted: the browser asked first.
    assert ("OPTIONS", "/todos") in demo.served.requests
    assert ("OPTIONS", "/todos/1") in demo.served.requests
    assert ("GET", "/todos") in demo.served.requests
