"""The demo app through Flask's test client: every board action, every API route, the activity log."""

from __future__ import annotations

import json
import pathlib
import re
import typing as t
import uuid

import flask
import pytest
import sqlalchemy as sa
from conftest import require_service
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from demo_app import create_app
from demo_app.commands import AddTodo
from demo_app.commands import RunClearCompleted
from demo_app.handlers import add_todo
from demo_app.handlers import clear_completed
from demo_app.models import Activity
from demo_app.models import Job
from demo_app.models import Todo
from demo_app.models import db
from flask_commands import Rejected
from flask_commands.idempotency.sql import SQLAlchemyStore

HX = {"HX-Request": "true", "HX-Request-Type": "partial"}
STALE = "This todo was changed elsewhere."
ADD_FORM = '<form method="post" action="/items" class="add-form" id="add-form"'


@pytest.fixture
def demo(tmp_path: pathlib.Path) -> flask.Flask:
    """The demo on a fresh SQLite file, with an in-memory broker on a queue of its own."""
    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.sqlite'}",
            "CELERY": {"broker_url": "memory://", "task_default_queue": f"demo-{uuid.uuid4()}"},
        }
    )


class Browser:
    """A test client that posts the board's forms as a browser does: with the CSRF token and a fresh id."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            found = re.search(r'name="csrf_token" value="([^"]+)"', self.get("/").text)
            assert found is not None
            self._token = found.group(1)
        return self._token

    def get(self, url: str, *, htmx: bool = False) -> TestResponse:
        return self.client.get(url, headers=HX if htmx else {})

    def post(
        self, url: str, data: dict[str, t.Any] | None = None, *, htmx: bool = False, **headers: str
    ) -> TestResponse:
        form = {"csrf_token": self.token(), "id": str(uuid.uuid4()), **(data or {})}
        return self.client.post(url, data=form, headers={**(HX if htmx else {}), **headers})


@pytest.fixture
def web(demo: flask.Flask) -> Browser:
    return Browser(demo.test_client())


@pytest.fixture
def api(demo: flask.Flask) -> FlaskClient:
    return demo.test_client()


def todos(demo: flask.Flask) -> list[Todo]:
    with demo.app_context():
        found = list(db.session.scalars(sa.select(Todo).order_by(Todo.id)))
        db.session.expunge_all()
        return found


def activity(demo: flask.Flask) -> list[tuple[str, str, str]]:
    """``(kind, title, actor)`` of each activity entry, oldest first."""
    with demo.app_context():
        entries = db.session.scalars(sa.select(Activity).order_by(Activity.id))
        return [(entry.kind, entry.title, entry.actor) for entry in entries]


def add(api: FlaskClient, title: str = "Milk", **values: t.Any) -> dict[str, t.Any]:
    response = api.post("/todos", json={"title": title, **values})
    assert response.status_code == 201, response.json
    return t.cast(dict[str, t.Any], response.json)


def titles(api: FlaskClient) -> list[str]:
    """The titles ``GET /todos`` lists, in its order."""
    return [todo["title"] for todo in t.cast(list[dict[str, t.Any]], api.get("/todos").json)]


def run_jobs(demo: flask.Flask) -> int:
    """Run the jobs waiting on the demo's queue in this process, as a worker would; return how many."""
    celery_app = demo.extensions["celery"]
    ran = 0
    with celery_app.connection_for_write() as connection:
        queue = connection.SimpleQueue(celery_app.conf.task_default_queue)
        try:
            while True:
                try:
                    message = queue.get(timeout=0.2)
                except queue.Empty:
                    return ran
                args, kwargs, _ = message.payload
                message.ack()
                celery_app.tasks[message.headers["task"]].apply(args=args, kwargs=kwargs).get()
                ran += 1
        finally:
            queue.close()


# The factory


def test_create_app_defaults_to_sqlite_in_instance_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASK_SQLALCHEMY_DATABASE_URI", raising=False)
    app = create_app({"TESTING": True, "CELERY": {"broker_url": "memory://"}})
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    assert uri == "sqlite:///" + str(pathlib.Path(app.instance_path) / "demo.sqlite")


def test_create_app_reads_prefixed_environment(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'from-env.sqlite'}"
    monkeypatch.setenv("FLASK_SQLALCHEMY_DATABASE_URI", url)
    monkeypatch.setenv("FLASK_CELERY__broker_url", "memory://")
    app = create_app({"TESTING": True})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == url
    assert app.config["CELERY"]["broker_url"] == "memory://"
    assert (tmp_path / "from-env.sqlite").exists()


def test_create_app_keeps_idempotency_in_the_same_database(demo: flask.Flask, tmp_path: pathlib.Path) -> None:
    assert demo.config["COMMANDS_IDEMPOTENCY_STORE"] == f"sqlite:///{tmp_path / 'demo.sqlite'}"
    with demo.app_context():
        tables = sa.inspect(db.engine).get_table_names()
    assert {"todos", "activity", "jobs", "commands_idempotency"} <= set(tables)


def test_create_app_protects_the_board_with_csrf(web: Browser) -> None:
    response = web.client.post("/items", data={"title": "Milk"})
    assert response.status_code == 400


def test_create_app_exempts_the_api_from_csrf(api: FlaskClient) -> None:
    assert api.post("/todos", json={"title": "Milk"}).status_code == 201


# Handlers as plain objects


def test_add_todo_handler_records_the_change(demo: flask.Flask) -> None:
    with demo.app_context():
        result = add_todo(AddTodo(title="  Milk  ", completed=True, actor="script"))
        assert result.todo is not None
        assert result.todo.title == "Milk"
        assert [c.kind for c in result.changes] == ["TodoAdded", "TodoCompleted"]


def test_clear_completed_job_without_its_row_is_rejected(demo: flask.Flask) -> None:
    # The job is published only after its row committed (the outbox): no row means no such job.
    with demo.app_context(), pytest.raises(Rejected) as info:
        clear_completed(RunClearCompleted(actor="worker"))
    assert info.value.code == "no_job"


# The board


def test_board_renders_the_add_form(web: Browser) -> None:
    page = web.get("/").text
    assert 'hx-post="/items"' in page
    assert '<label for="title">What needs doing?</label>' in page
    assert "Nothing to do." in page


def test_board_add_redirects_to_the_board(web: Browser, demo: flask.Flask) -> None:
    response = web.post("/items", {"title": "Milk"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert "Milk" in web.get("/").text
    assert [todo.title for todo in todos(demo)] == ["Milk"]


def test_board_add_htmx_returns_a_fresh_form_and_the_board_out_of_band(web: Browser) -> None:
    response = web.post("/items", {"title": "Milk"}, htmx=True)
    assert response.status_code == 201
    assert response.text.lstrip().startswith(ADD_FORM)
    assert 'value=""' in response.text  # the title input is empty again
    assert 'id="board" class="board" aria-labelledby="board-title" hx-swap-oob="true"' in response.text
    assert '<span class="title">Milk</span>' in response.text


def test_board_add_missing_title_rerenders_the_page(web: Browser, demo: flask.Flask) -> None:
    response = web.post("/items", {"title": ""})
    assert response.status_code == 422
    assert "<!doctype html>" in response.text
    assert "Give the todo a title." in response.text
    assert 'aria-invalid="true"' in response.text
    assert todos(demo) == []


def test_board_add_title_over_200_characters_is_invalid(web: Browser, demo: flask.Flask) -> None:
    response = web.post("/items", {"title": "x" * 201}, htmx=True)
    assert response.status_code == 422
    assert response.text.lstrip().startswith(ADD_FORM)
    assert "Keep the title to 200 characters or fewer." in response.text
    assert todos(demo) == []


def test_board_add_live_validation_returns_the_field(web: Browser, demo: flask.Flask) -> None:
    response = web.post("/items", {"title": "   "}, htmx=True, **{"X-Commands-Validate": "title"})
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div class="commands-field commands-field-invalid"')
    assert "Give the todo a title." in response.text
    assert todos(demo) == []


def test_board_page_repeats_no_id(web: Browser, api: FlaskClient) -> None:
    add(api, "Milk")
    add(api, "Eggs", completed=True)
    web.post("/items/1/delete", {"version": "1"})
    page = web.get("/items/2/edit").text
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert page.count("<form ") == 4  # add, undo, the open edit form, clear completed


def test_board_buttons_are_forms_with_the_todos_version(web: Browser, api: FlaskClient) -> None:
    add(api, "Milk")
    api.patch("/todos/1", json={"title": "Oat milk"})
    page = web.get("/").text
    for action in ("toggle", "delete"):
        start = page.index(f'<form method="post" action="/items/1/{action}"')
        form = page[start : page.index("</form>", start)]
        assert '<input name="version" type="hidden" value="2">' in form
        assert re.search(r'<input name="id" type="hidden" value="[0-9a-f-]{36}">', form)
        assert 'name="csrf_token"' in form


def test_board_edit_form_opens_inline(web: Browser, api: FlaskClient) -> None:
    add(api, "Milk", order=2)
    response = web.get("/items/1/edit", htmx=True)
    assert response.status_code == 200
    assert response.headers["HX-Retarget"] == "#board"
    assert 'id="edit-1-title"' in response.text
    assert 'value="Milk"' in response.text
    assert '<input name="version" type="hidden" value="1">' in response.text


def test_board_edit_form_without_javascript_is_the_page(web: Browser, api: FlaskClient) -> None:
    add(api, "Milk")
    page = web.get("/items/1/edit").text
    assert "<!doctype html>" in page
    assert 'id="edit-1-title"' in page


def test_board_edit_changes_title_and_order(web: Browser, api: FlaskClient, demo: flask.Flask) -> None:
    add(api, "Milk")
    response = web.post("/items/1/edit", {"title": "Oat milk", "order": "5", "version": "1"}, htmx=True)
    assert response.status_code == 200
    assert '<span class="title">Oat milk</span>' in response.text
    assert '<span class="order" title="Order">#5</span>' in response.text
    [todo] = todos(demo)
    assert (todo.title, todo.order, todo.version) == ("Oat milk", 5, 2)


def test_board_edit_blank_title_stays_in_edit_mode(web: Browser, api: FlaskClient) -> None:
    add(api, "Milk")
    response = web.post("/items/1/edit", {"title": " ", "version": "1"}, htmx=True)
    assert response.status_code == 422
    assert 'id="edit-1-title"' in response.text
    assert "Give the todo a title." in response.text


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no-js"])
def test_board_edit_stale_version_keeps_the_text_and_shows_the_current_title(
    web: Browser, api: FlaskClient, demo: flask.Flask, htmx: bool
) -> None:
    add(api, "Milk")
    api.patch("/todos/1", json={"title": "Oat milk"})
    response = web.post("/items/1/edit", {"title": "Soy milk", "version": "1"}, htmx=htmx)
    assert response.status_code == 409
    html = response.text
    assert STALE in html
    assert 'Title is now “<span class="commands-conflict-current">Oat milk</span>”.' in html
    assert re.search(r'<input[^>]* autofocus id="edit-1-title"[^>]* value="Soy milk">', html), html
    assert '<input name="version" type="hidden" value="2">' in html  # saving again saves over it
    assert '<a href="/items/1/edit" class="commands-conflict-theirs">take theirs</a>' in html
    assert todos(demo)[0].title == "Oat milk"


def test_board_toggle_completes_and_reopens(web: Browser, api: FlaskClient, demo: flask.Flask) -> None:
    add(api, "Milk")
    response = web.post("/items/1/toggle", {"completed": "y", "version": "1"}, htmx=True)
    assert response.status_code == 200
    assert 'class="todo done"' in response.text
    assert todos(demo)[0].completed is True
    response = web.post("/items/1/toggle", {"completed": "false", "version": "2"})
    assert response.status_code == 303
    assert todos(demo)[0].completed is False


def test_board_toggle_stale_version_conflicts(web: Browser, api: FlaskClient, demo: flask.Flask) -> None:
    add(api, "Milk")
    api.patch("/todos/1", json={"completed": True})
    response = web.post("/items/1/toggle", {"completed": "y", "version": "1"}, htmx=True)
    assert response.status_code == 409
    assert STALE in response.text


def test_board_delete_then_undo(web: Browser, api: FlaskClient, demo: flask.Flask) -> None:
    add(api, "Milk")
    response = web.post("/items/1/delete", {"version": "1"}, htmx=True)
    assert response.status_code == 200
    assert "Deleted “Milk”." in response.text
    assert 'hx-post="/items/1/restore"' in response.text
    assert api.get("/todos").json == []
    response = web.post("/items/1/restore", htmx=True)
    assert response.status_code == 200
    assert "Deleted “Milk”." not in response.text
    assert '<span class="title">Milk</span>' in response.text
    assert titles(api) == ["Milk"]


def test_board_undo_is_offered_after_a_redirect(web: Browser, api: FlaskClient) -> None:
    add(api, "Milk")
    assert web.post("/items/1/delete", {"version": "1"}).status_code == 303
    assert "Deleted “Milk”." in web.get("/").text


def test_board_change_to_a_deleted_todo_conflicts(web: Browser, api: FlaskClient) -> None:
    add(api, "Milk")
    api.delete("/todos/1")
    response = web.post("/items/1/toggle", {"completed": "y", "version": "1"}, htmx=True)
    assert response.status_code == 409
    assert "This todo was deleted elsewhere." in response.text


def test_board_clear_completed_runs_as_a_background_job(
    web: Browser, api: FlaskClient, demo: flask.Flask
) -> None:
    add(api, "Milk", completed=True)
    add(api, "Eggs")
    response = web.post("/items/clear-completed", htmx=True)
    assert response.status_code == 200
    assert "Clearing completed todos in the background…" in response.text
    with demo.app_context():
        [job] = db.session.scalars(sa.select(Job)).all()
        job_id = job.id
    assert f'hx-get="/jobs/{job_id}" hx-trigger="every 1s"' in response.text
    pending = web.get(f"/jobs/{job_id}", htmx=True)
    assert pending.text.lstrip().startswith(f'<p id="job-{job_id}" class="job" role="status"')

    assert run_jobs(demo) == 1

    done = web.get(f"/jobs/{job_id}", htmx=True)
    assert done.headers["HX-Retarget"] == "#board"
    assert "Cleared 1 completed todo." in done.text
    assert "every 1s" not in done.text
    assert titles(api) == ["Eggs"]
    assert activity(demo)[-1][0] == "CompletedCleared"


def test_board_pending_job_without_javascript_refreshes_the_page(web: Browser, api: FlaskClient) -> None:
    add(api, "Milk", completed=True)
    assert web.post("/items/clear-completed").status_code == 303
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in web.get("/").text


def test_board_job_outcome_shows_by_the_button_once_without_javascript(
    web: Browser, api: FlaskClient, demo: flask.Flask
) -> None:
    add(api, "Milk", completed=True)
    add(api, "Eggs")
    assert web.post("/items/clear-completed").status_code == 303
    pending = web.get("/").text
    footer = pending[pending.index('<footer class="board-footer">') :]
    assert "Clearing completed todos in the background…" in footer  # beside the button
    assert run_jobs(demo) == 1
    done = web.get("/").text
    footer = done[done.index('<footer class="board-footer">') :]
    assert '<p class="job-result" id="job-result">Cleared 1 completed todo.</p>' in footer
    assert "job-result" not in web.get("/").text  # shown once


def test_board_job_status_of_unknown_job_is_404(web: Browser) -> None:
    assert web.get("/jobs/nope", htmx=True).status_code == 404


def test_board_double_submit_of_one_form_adds_one_todo(web: Browser, demo: flask.Flask) -> None:
    form = {"title": "Milk", "id": str(uuid.uuid4())}
    first = web.post("/items", form)
    second = web.post("/items", form)
    assert (first.status_code, second.status_code) == (303, 303)
    assert len(todos(demo)) == 1


def test_board_form_resubmitted_with_other_values_asks_to_check_it(web: Browser, demo: flask.Flask) -> None:
    # A form restored from the browser's history still holds the id of its first submission.
    form_id = str(uuid.uuid4())
    web.post("/items", {"title": "Milk", "id": form_id})
    response = web.post("/items", {"title": "Eggs", "id": form_id}, htmx=True)
    assert response.status_code == 422
    assert "This form was already submitted with other values. Check it and submit again." in response.text
    assert 'value="Eggs"' in response.text
    assert form_id not in response.text
    assert [todo.title for todo in todos(demo)] == ["Milk"]


def test_board_keys_are_scoped_by_visitor(demo: flask.Flask) -> None:
    form = {"title": "Milk", "id": str(uuid.uuid4())}
    for _ in range(2):
        assert Browser(demo.test_client()).post("/items", form).status_code == 303
    assert [todo.title for todo in todos(demo)] == ["Milk", "Milk"]


# The activity log


def test_activity_page_lists_changes_newest_first(web: Browser, api: FlaskClient) -> None:
    add(api, "Milk")
    web.post("/items/1/toggle", {"completed": "y", "version": "1"})
    page = web.get("/activity").text
    assert page.index('title="TodoCompleted"') < page.index('title="TodoAdded"')
    assert '<td data-label="Who">api</td>' in page


def test_activity_patch_of_title_and_completed_records_two_entries(
    api: FlaskClient, demo: flask.Flask
) -> None:
    add(api, "Milk")
    api.patch("/todos/1", json={"title": "Oat milk", "completed": True})
    assert activity(demo) == [
        ("TodoAdded", "Milk", "api"),
        ("TitleChanged", "Oat milk", "api"),
        ("TodoCompleted", "Oat milk", "api"),
    ]


def test_activity_records_each_kind(web: Browser, api: FlaskClient, demo: flask.Flask) -> None:
    add(api, "Milk")
    api.patch("/todos/1", json={"order": 3, "completed": True})
    api.patch("/todos/1", json={"completed": False})
    web.post("/items/1/delete", {"version": "3"})
    web.post("/items/1/restore")
    api.delete("/todos")
    kinds = [kind for kind, _, _ in activity(demo)]
    assert kinds == [
        "TodoAdded",
        "TodoCompleted",
        "OrderChanged",
        "TodoReopened",
        "TodoDeleted",
        "TodoRestored",
        "TodosCleared",
    ]


def test_activity_names_the_board_visitor(web: Browser, api: FlaskClient, demo: flask.Flask) -> None:
    web.post("/items", {"title": "Milk"})
    [(_, _, actor)] = activity(demo)
    assert re.fullmatch(r"guest-[0-9a-f]{4}", actor)


def test_activity_records_nothing_for_a_conflict_or_no_change(api: FlaskClient, demo: flask.Flask) -> None:
    add(api, "Milk")
    api.patch("/todos/1", json={"title": "Milk"})
    api.patch("/todos/1", json={"title": "Eggs", "version": 7})
    assert activity(demo) == [("TodoAdded", "Milk", "api")]


# The Todo-Backend API


def test_api_lists_no_todos(api: FlaskClient) -> None:
    response = api.get("/todos")
    assert (response.status_code, response.json) == (200, [])


def test_api_create_defaults_to_not_completed_with_an_absolute_url(api: FlaskClient) -> None:
    response = api.post("/todos", json={"title": "Milk"})
    assert response.status_code == 201
    assert response.json == {
        "id": 1,
        "title": "Milk",
        "completed": False,
        "order": None,
        "url": "http://localhost/todos/1",
        "version": 1,
    }
    assert response.headers["Location"] == "http://localhost/todos/1"


def test_api_create_keeps_order_and_completed(api: FlaskClient) -> None:
    todo = add(api, "Milk", order=523, completed=True)
    assert (todo["order"], todo["completed"]) == (523, True)
    assert api.get(todo["url"]).json == todo


def test_api_lists_todos_by_order(api: FlaskClient) -> None:
    add(api, "c")
    add(api, "b", order=2)
    add(api, "a", order=1)
    assert titles(api) == ["a", "b", "c"]


def test_api_create_missing_title_is_422(api: FlaskClient) -> None:
    response = api.post("/todos", json={"completed": False})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.json is not None
    assert response.json["errors"] == {"title": ["Give the todo a title."]}


def test_api_create_title_over_200_characters_is_422(api: FlaskClient) -> None:
    response = api.post("/todos", json={"title": "x" * 201})
    assert response.status_code == 422
    assert response.json is not None
    assert response.json["errors"] == {"title": ["Keep the title to 200 characters or fewer."]}


def test_api_create_completed_yes_is_422(api: FlaskClient) -> None:
    response = api.post("/todos", json={"title": "Milk", "completed": "yes"})
    assert response.status_code == 422
    assert response.json is not None
    assert response.json["errors"] == {"completed": ["Not a valid value."]}


def test_api_create_malformed_json_is_400(api: FlaskClient) -> None:
    response = api.post("/todos", data="{", content_type="application/json")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


def test_api_get_unknown_todo_is_404_problem(api: FlaskClient) -> None:
    response = api.get("/todos/42")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.json == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "There is no todo 42.",
    }


def test_api_unknown_url_under_todos_is_404_problem(api: FlaskClient) -> None:
    response = api.get("/todos/milk")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_api_patch_changes_the_fields_sent(api: FlaskClient) -> None:
    todo = add(api, "Milk", order=1)
    response = api.patch(todo["url"], json={"title": "Oat milk"})
    assert response.status_code == 200
    body = t.cast(dict[str, t.Any], response.json)
    assert (body["title"], body["completed"], body["order"]) == ("Oat milk", False, 1)
    response = api.patch(todo["url"], json={"completed": True, "order": 9})
    body = t.cast(dict[str, t.Any], response.json)
    assert (body["title"], body["completed"], body["order"]) == ("Oat milk", True, 9)
    assert api.get(todo["url"]).json == response.json


def test_api_patch_stale_version_is_409(api: FlaskClient) -> None:
    todo = add(api, "Milk")
    api.patch(todo["url"], json={"title": "Oat milk", "version": 1})
    response = api.patch(todo["url"], json={"title": "Soy milk", "version": 1})
    assert response.status_code == 409
    assert response.json == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": STALE,
        "code": "stale_version",
        "current": {"title": "Oat milk", "completed": False, "order": None, "version": 2},
    }


def test_api_patch_completed_yes_is_422(api: FlaskClient) -> None:
    todo = add(api, "Milk")
    response = api.patch(todo["url"], json={"completed": "yes"})
    assert response.status_code == 422
    assert response.json is not None
    assert response.json["errors"] == {"completed": ["Not a valid value."]}


def test_api_patch_unknown_todo_is_404(api: FlaskClient) -> None:
    response = api.patch("/todos/42", json={"title": "Milk"})
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_api_delete_one_then_it_is_gone(api: FlaskClient) -> None:
    todo = add(api, "Milk")
    assert api.delete(todo["url"]).status_code == 204
    assert api.get(todo["url"]).status_code == 404
    assert api.delete(todo["url"]).status_code == 404


def test_api_delete_all(api: FlaskClient) -> None:
    add(api, "Milk")
    add(api, "Eggs")
    assert api.delete("/todos").status_code == 204
    assert api.get("/todos").json == []


def test_api_wrong_method_is_405_problem(api: FlaskClient) -> None:
    response = api.put("/todos/1", json={})
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
    assert "PATCH" in response.headers["Allow"]


def test_api_cors_preflight(api: FlaskClient) -> None:
    response = api.options(
        "/todos/1",
        headers={
            "Origin": "http://elsewhere.example",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    methods = set(response.headers["Access-Control-Allow-Methods"].split(", "))
    assert methods >= {"GET", "POST", "PATCH", "DELETE"}
    assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]


def test_api_cors_headers_on_success_and_errors(api: FlaskClient) -> None:
    assert api.get("/todos").headers["Access-Control-Allow-Origin"] == "*"
    assert api.post("/todos", json={}).headers["Access-Control-Allow-Origin"] == "*"
    assert api.get("/todos/42").headers["Access-Control-Allow-Origin"] == "*"


def test_api_no_cors_on_the_board(web: Browser) -> None:
    assert "Access-Control-Allow-Origin" not in web.get("/").headers


def test_api_idempotency_key_with_another_payload_is_422(api: FlaskClient, demo: flask.Flask) -> None:
    headers = {"Idempotency-Key": "order-milk-1"}
    api.post("/todos", json={"title": "Milk"}, headers=headers)
    response = api.post("/todos", json={"title": "Eggs"}, headers=headers)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert len(todos(demo)) == 1


def test_api_idempotency_key_replays_the_first_response(api: FlaskClient, demo: flask.Flask) -> None:
    headers = {"Idempotency-Key": "order-milk-1"}
    first = api.post("/todos", json={"title": "Milk"}, headers=headers)
    second = api.post("/todos", json={"title": "Milk"}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert json.loads(second.data) == json.loads(first.data)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(todos(demo)) == 1


def test_demo_on_postgresql() -> None:
    """``FLASK_SQLALCHEMY_DATABASE_URI=postgresql+psycopg://…`` moves the demo, its store included."""
    server = require_service("postgresql")
    import psycopg

    name = f"demo_{uuid.uuid4().hex[:12]}"
    admin = server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        url = server.rsplit("/", 1)[0] + "/" + name
        # The store create_app would make from the URL, made here so that it can be disposed of.
        store = SQLAlchemyStore(url)
        config = {"SQLALCHEMY_DATABASE_URI": url, "COMMANDS_IDEMPOTENCY_STORE": store}
        app = create_app({"TESTING": True, "CELERY": {"broker_url": "memory://"}, **config})
        client = app.test_client()
        headers = {"Idempotency-Key": "pg-1"}
        todo = add(client, "Milk", order=1)
        assert client.post("/todos", json={"title": "Eggs"}, headers=headers).status_code == 201
        assert (
            client.post("/todos", json={"title": "Eggs"}, headers=headers).headers["Idempotent-Replayed"]
            == "true"
        )
        client.patch(todo["url"], json={"title": "Oat milk", "completed": True})
        assert client.patch(todo["url"], json={"title": "Soy", "version": 1}).status_code == 409
        assert titles(client) == ["Oat milk", "Eggs"]
        assert [kind for kind, _, _ in activity(app)] == [
            "TodoAdded",
            "TodoAdded",
            "TitleChanged",
            "TodoCompleted",
        ]
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        store.dispose()
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE {name} WITH (FORCE)")


# Numbers past what the INTEGER columns hold are client errors, never a database overflow.


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_api_id_past_int32_is_404(api: FlaskClient, method: str) -> None:
    response = api.open("/todos/9223372036854775808", method=method, json={})
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_api_order_past_int32_is_422(api: FlaskClient) -> None:
    response = api.post("/todos", json={"title": "Milk", "order": 2**31})
    assert response.status_code == 422
    assert response.json is not None
    assert response.json["errors"] == {"order": ["Number must be between -2147483648 and 2147483647."]}
