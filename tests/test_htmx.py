"""Tests for flask_commands.htmx: request details (htmx 2 and 4) and response-header helpers."""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import typing as t

import flask
import pytest
from werkzeug.datastructures import Headers

from flask_commands import htmx

SWAP_STYLES = (
    "'innerHTML', 'outerHTML', 'textContent', 'beforebegin', 'afterbegin', 'beforeend', "
    "'afterend', 'delete', 'none', 'innerMorph', 'outerMorph', 'outerSync'"
)


@pytest.fixture
def app() -> flask.Flask:
    return flask.Flask(__name__)


@pytest.fixture
def make(app: flask.Flask) -> t.Callable[..., htmx.HtmxDetails]:
    """Return the details of a test request with ``headers``."""

    def make(headers: dict[str, str] | None = None, base_url: str = "http://example.com") -> htmx.HtmxDetails:
        with app.test_request_context(headers=headers or {}, base_url=base_url):
            return htmx.details()

    return make


@pytest.fixture
def response() -> flask.Response:
    return flask.Response("fragment")


# Request details, two tests per header.


def test_bool_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert bool(make()) is False


def test_bool_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert bool(make({"HX-Request": "true"})) is True


def test_bool_not_true(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert bool(make({"HX-Request": "false"})) is False


def test_boosted_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make().boosted is False


def test_boosted_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Boosted": "true"}).boosted is True


def test_current_url_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make().current_url is None


def test_current_url_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Current-URL": "https://example.com/a?b=1"}).current_url == "https://example.com/a?b=1"


def test_current_url_empty(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Current-URL": ""}).current_url is None


def test_current_url_abs_path_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make().current_url_abs_path is None


def test_current_url_abs_path_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    details = make({"HX-Current-URL": "http://example.com/todos/?page=2#top"})
    assert details.current_url_abs_path == "/todos/?page=2#top"


def test_current_url_abs_path_other_host(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Current-URL": "http://evil.example/todos/"}).current_url_abs_path is None


def test_current_url_abs_path_other_scheme(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Current-URL": "https://example.com/todos/"}).current_url_abs_path is None


def test_current_url_abs_path_headers_only() -> None:
    headers = Headers({"Host": "example.com", "HX-Current-URL": "https://example.com/todos/"})
    assert htmx.HtmxDetails(headers).current_url_abs_path == "/todos/"


def test_current_url_abs_path_headers_only_other_host() -> None:
    headers = Headers({"Host": "example.com", "HX-Current-URL": "https://evil.example/todos/"})
    assert htmx.HtmxDetails(headers).current_url_abs_path is None


def test_history_restore_request_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make().history_restore_request is False


def test_history_restore_request_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-History-Restore-Request": "true"}).history_restore_request is True


def test_prompt_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make().prompt is None


def test_prompt_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Prompt": "yes"}).prompt == "yes"


def test_prompt_auto_encoded_htmx2(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    details = make({"HX-Prompt": "d%C3%A9j%C3%A0%20vu", "HX-Prompt-URI-AutoEncoded": "true"})
    assert details.prompt == "déjà vu"


def test_prompt_encoded_htmx4(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    details = make({"HX-Prompt": "d%C3%A9j%C3%A0%20vu", "HX-Request-Type": "partial"})
    assert details.prompt == "déjà vu"


def test_prompt_not_decoded_htmx2(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Prompt": "100%25"}).prompt == "100%25"


def test_target_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make().target is None


def test_target_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Target": "new-todo"}).target == "new-todo"


def test_target_encoded_htmx4(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    details = make({"HX-Target": "form#caf%C3%A9", "HX-Request-Type": "partial"})
    assert details.target == "form#café"


def test_trigger_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make().trigger is None


def test_trigger_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Trigger": "save"}).trigger == "save"


def test_trigger_name_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make().trigger_name is None


def test_trigger_name_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Trigger-Name": "title"}).trigger_name == "title"


def test_source_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make().source is None


def test_source_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    details = make({"HX-Source": "button#save", "HX-Request-Type": "partial"})
    assert details.source == "button#save"


def test_source_encoded(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    details = make({"HX-Source": "input#t%C3%AAte", "HX-Request-Type": "partial"})
    assert details.source == "input#tête"


def test_request_type_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make().request_type is None


def test_request_type_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Request-Type": "partial"}).request_type == "partial"


def test_request_type_full(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Request-Type": "full"}).request_type == "full"


def test_request_type_unknown(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"HX-Request-Type": "fragment"}).request_type is None


def test_triggering_event_default(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make().triggering_event is None


def test_triggering_event_set(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    details = make({"Triggering-Event": '{"type": "click", "target": null}'})
    assert details.triggering_event == {"type": "click", "target": None}


def test_triggering_event_bad_json(make: t.Callable[..., htmx.HtmxDetails]) -> None:
    assert make({"Triggering-Event": "{not json"}).triggering_event is None


# details(): one object per request, kept on g.


def test_details_cached(app: flask.Flask) -> None:
    with app.test_request_context(headers={"HX-Request": "true"}):
        first = htmx.details()
        assert htmx.details() is first
        assert flask.g._commands_htmx is first


def test_details_new_request(app: flask.Flask) -> None:
    with app.app_context():
        with app.test_request_context(headers={"HX-Request": "true"}):
            first = htmx.details()
        with app.test_request_context():
            second = htmx.details()
            assert second is not first
            assert not second


def test_details_explicit_request(app: flask.Flask) -> None:
    with app.test_request_context(headers={"HX-Request": "true"}) as ctx:
        assert htmx.details(ctx.request) is htmx.details()


def test_details_without_app_context(app: flask.Flask) -> None:
    with app.test_request_context(headers={"HX-Boosted": "true"}) as ctx:
        request = ctx.request
    assert htmx.details(request).boosted is True


def test_details_outside_request() -> None:
    with pytest.raises(RuntimeError, match="Working outside of request context"):
        htmx.details()


# Response helpers, a class per helper.


class TestRetarget:
    def test_success(self, response: flask.Response) -> None:
        assert htmx.retarget(response, "#errors") is response
        assert response.headers["HX-Retarget"] == "#errors"


class TestReswap:
    def test_success(self, response: flask.Response) -> None:
        assert htmx.reswap(response, "outerHTML") is response
        assert response.headers["HX-Reswap"] == "outerHTML"

    def test_success_modifiers(self, response: flask.Response) -> None:
        htmx.reswap(response, "innerHTML transition:true scroll:top")
        assert response.headers["HX-Reswap"] == "innerHTML transition:true scroll:top"

    def test_success_chains(self, response: flask.Response) -> None:
        assert htmx.retarget(htmx.reswap(response, "outerHTML"), "this") is response
        assert response.headers["HX-Reswap"] == "outerHTML"
        assert response.headers["HX-Retarget"] == "this"

    def test_fail_unknown_style(self, response: flask.Response) -> None:
        with pytest.raises(ValueError, match="not an htmx swap style") as excinfo:
            htmx.reswap(response, "outerHtml")
        assert excinfo.value.args == (
            f"reswap() method 'outerHtml' is not an htmx swap style; use one of {SWAP_STYLES},"
            ' optionally followed by modifiers ("outerHTML transition:true").',
        )
        assert "HX-Reswap" not in response.headers

    def test_fail_empty(self, response: flask.Response) -> None:
        with pytest.raises(ValueError, match="not an htmx swap style") as excinfo:
            htmx.reswap(response, "")
        assert excinfo.value.args[0].startswith("reswap() method '' is not an htmx swap style;")


class TestTriggerClientEvent:
    def test_success(self, response: flask.Response) -> None:
        assert htmx.trigger_client_event(response, "todoAdded") is response
        assert json.loads(response.headers["HX-Trigger"]) == {"todoAdded": {}}

    def test_success_params(self, response: flask.Response) -> None:
        htmx.trigger_client_event(response, "todoAdded", {"id": 3, "title": "café"})
        assert response.headers["HX-Trigger"] == '{"todoAdded": {"id": 3, "title": "caf\\u00e9"}}'

    def test_success_merge(self, response: flask.Response) -> None:
        htmx.trigger_client_event(response, "a", {"n": 1})
        htmx.trigger_client_event(response, "b")
        assert json.loads(response.headers["HX-Trigger"]) == {"a": {"n": 1}, "b": {}}

    def test_success_replace_same_name(self, response: flask.Response) -> None:
        htmx.trigger_client_event(response, "a", {"n": 1})
        htmx.trigger_client_event(response, "a", {"n": 2})
        assert json.loads(response.headers["HX-Trigger"]) == {"a": {"n": 2}}

    def test_success_merge_names(self, response: flask.Response) -> None:
        response.headers["HX-Trigger"] = "one, two"
        htmx.trigger_client_event(response, "three")
        assert json.loads(response.headers["HX-Trigger"]) == {"one": {}, "two": {}, "three": {}}

    def test_success_in_app_context(self, app: flask.Flask, response: flask.Response) -> None:
        with app.app_context():
            htmx.trigger_client_event(response, "z")
            htmx.trigger_client_event(response, "a", {"when": "now"})
        assert response.headers["HX-Trigger"] == '{"a": {"when": "now"}, "z": {}}'

    def test_success_after_settle(self, response: flask.Response) -> None:
        htmx.trigger_client_event(response, "done", after="settle")
        assert json.loads(response.headers["HX-Trigger-After-Settle"]) == {"done": {}}
        assert "HX-Trigger" not in response.headers

    def test_success_after_swap(self, response: flask.Response) -> None:
        htmx.trigger_client_event(response, "done", after="swap")
        assert json.loads(response.headers["HX-Trigger-After-Swap"]) == {"done": {}}

    def test_fail_after(self, response: flask.Response) -> None:
        with pytest.raises(ValueError, match="after=") as excinfo:
            htmx.trigger_client_event(response, "done", after="load")  # type: ignore[arg-type]
        assert excinfo.value.args == (
            "trigger_client_event() after='load' is not valid; use one of 'receive', 'settle', 'swap'.",
        )

    def test_fail_bad_json(self, response: flask.Response) -> None:
        response.headers["HX-Trigger"] = "{oops"
        with pytest.raises(ValueError, match="not valid JSON") as excinfo:
            htmx.trigger_client_event(response, "done")
        assert excinfo.value.args == (
            "The response's HX-Trigger header '{oops' is not valid JSON; set it only with"
            " trigger_client_event().",
        )


class TestPushUrl:
    def test_success(self, response: flask.Response) -> None:
        assert htmx.push_url(response, "/todos/3") is response
        assert response.headers["HX-Push-Url"] == "/todos/3"

    def test_success_false(self, response: flask.Response) -> None:
        htmx.push_url(response, False)
        assert response.headers["HX-Push-Url"] == "false"


class TestReplaceUrl:
    def test_success(self, response: flask.Response) -> None:
        assert htmx.replace_url(response, "/todos/3") is response
        assert response.headers["HX-Replace-Url"] == "/todos/3"

    def test_success_false(self, response: flask.Response) -> None:
        htmx.replace_url(response, False)
        assert response.headers["HX-Replace-Url"] == "false"


class TestRefresh:
    def test_success(self, response: flask.Response) -> None:
        assert htmx.refresh(response) is response
        assert response.headers["HX-Refresh"] == "true"


class TestClientRedirect:
    def test_success(self) -> None:
        response = htmx.client_redirect("/todos/")
        assert response.status_code == 200
        assert response.headers["HX-Redirect"] == "/todos/"
        assert "Location" not in response.headers
        assert response.get_data() == b""

    def test_success_app_response_class(self, app: flask.Flask) -> None:
        class AppResponse(flask.Response):
            pass

        app.response_class = AppResponse
        with app.app_context():
            assert type(htmx.client_redirect("/todos/")) is AppResponse


class TestLocation:
    def test_success(self) -> None:
        response = htmx.location("/todos/")
        assert response.status_code == 200
        assert response.headers["HX-Location"] == "/todos/"

    def test_success_options(self) -> None:
        response = htmx.location(
            "/todos/",
            source="#board",
            event="click",
            target="#main",
            swap="outerHTML",
            select="#list",
            values={"page": "2"},
            headers={"X-Custom": "1"},
        )
        assert json.loads(response.headers["HX-Location"]) == {
            "path": "/todos/",
            "source": "#board",
            "event": "click",
            "target": "#main",
            "swap": "outerHTML",
            "select": "#list",
            "values": {"page": "2"},
            "headers": {"X-Custom": "1"},
        }

    def test_fail_swap(self) -> None:
        with pytest.raises(ValueError, match="not an htmx swap style") as excinfo:
            htmx.location("/todos/", swap="replace")
        assert excinfo.value.args == (
            f"location() swap 'replace' is not an htmx swap style; use one of {SWAP_STYLES},"
            ' optionally followed by modifiers ("outerHTML transition:true").',
        )


class TestHtmxIntegrity:
    def test_success(self) -> None:
        path = pathlib.Path(htmx.__file__).parent / "static" / htmx.HTMX_FILENAME
        digest = base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode()
        assert htmx.htmx_integrity() == f"sha384-{digest}"

    def test_success_cached(self) -> None:
        assert htmx.htmx_integrity() is htmx.htmx_integrity()
