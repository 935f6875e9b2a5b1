"""The ``flask commands`` CLI group: list, schema, openapi, run, purge, init-db and relay."""

from __future__ import annotations

import json
import typing as t

import click
from flask import current_app
from flask.cli import AppGroup

from . import _codec
from .command import Command
from .command import _registry as _commands
from .command import command_fields
from .command import type_name
from .errors import CommandInvalid
from .errors import Conflict
from .errors import Rejected
from .handler import Handler
from .handler import _registry as _handlers
from .openapi import _document
from .state import app_state

commands_cli = AppGroup("commands", help="Commands, their schemas, and idempotency records.")


def _find_command(name: str) -> type[Command]:
    """Find a command by its type name (``module:QualName``) or its unique class name."""
    if name in _commands:
        return _commands[name]
    found = [cls for full, cls in _commands.items() if full.rpartition(":")[2] == name]
    if len(found) == 1:
        return found[0]
    if not found:
        raise click.ClickException(f"No command named {name!r}; 'flask commands list' shows them.")
    names = ", ".join(sorted(type_name(cls) for cls in found))
    raise click.ClickException(f"{name!r} names several commands ({names}); use the full name.")


def _handler_for(cls: type[Command]) -> Handler[t.Any, t.Any]:
    found = [h for h in _handlers.values() if h.command is cls]
    if len(found) != 1:
        count = "no handler" if not found else f"{len(found)} handlers"
        raise click.ClickException(f"{cls.__name__} has {count}; 'run' needs exactly one.")
    return found[0]


def _describe_field(info: t.Any) -> str:
    annotation = getattr(info.annotation, "__name__", None) or repr(info.annotation).replace("typing.", "")
    validators = [type(v).__name__ for v in info.options.validators]
    flags = [flag for flag, on in (("required", info.required), ("trusted", info.trusted)) if on]
    return " ".join([f"{info.name}: {annotation}", *flags, *(f"[{v}]" for v in validators)])


@commands_cli.command("list")
def list_commands() -> None:
    """List every command with its fields and handlers."""
    for full in sorted(_commands):
        cls = _commands[full]
        click.echo(full)
        for info in command_fields(cls):
            click.echo(f"    {_describe_field(info)}")
        for h in sorted((h for h in _handlers.values() if h.command is cls), key=lambda h: h.name):
            click.echo(f"    handler {h.name}")


@commands_cli.command("schema")
@click.argument("name")
def schema(name: str) -> None:
    """Print the JSON Schema of command NAME's input."""
    click.echo(json.dumps(_find_command(name).json_schema(), indent=2))


@commands_cli.command("openapi")
@click.option("--title", default=None, help="The API's title; the app's name by default.")
@click.option("--api-version", default="1.0.0", show_default=True, help="The API's version (info.version).")
def openapi(title: str | None, api_version: str) -> None:
    """Print the OpenAPI 3.1 document of the app's command views as JSON."""
    click.echo(json.dumps(_document(current_app, title=title, version=api_version), indent=2))


@commands_cli.command("run")
@click.argument("name")
@click.option("--data", "data_text", default="{}", help="The command's input as a JSON object.")
@click.option("--trusted", "trusted_text", default="{}", help="Trusted field values as a JSON object.")
def run(name: str, data_text: str, trusted_text: str) -> None:
    """Build command NAME from --data and handle it, printing the outcome as JSON.

    Exits 0 when handled, 1 when the input is invalid, 2 on a conflict or a rejection.
    """
    cls = _find_command(name)
    handler = _handler_for(cls)
    data = _json_object(data_text, "--data")
    trusted = _json_object(trusted_text, "--trusted")
    expected = {info.name for info in command_fields(cls) if info.trusted}
    if set(trusted) != expected:
        names = ", ".join(sorted(expected)) or "none"
        raise click.ClickException(
            f"--trusted must set exactly the trusted fields of {cls.__name__}: {names}."
        )
    try:
        cmd = cls.build(data, **trusted)
    except CommandInvalid as e:
        _emit({"outcome": "invalid", "errors": e.errors}, 1)
    try:
        result = handler.handle(cmd)
    except (Conflict, Rejected) as e:
        _emit({"outcome": e.outcome, "message": e.message, "code": e.code, "id": str(cmd.id)}, 2)
    _emit({"outcome": "ok", "id": str(cmd.id), "result": _jsonable(result)}, 0)


def _json_object(text: str, option: str) -> dict[str, t.Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise click.ClickException(f"{option} is not valid JSON: {e}.") from None
    if not isinstance(value, dict):
        raise click.ClickException(f"{option} must be a JSON object, not {type(value).__name__}.")
    return value


def _jsonable(value: t.Any) -> t.Any:
    try:
        return _codec.to_jsonable(value)
    except TypeError:
        return repr(value)


def _emit(outcome: dict[str, t.Any], status: int) -> t.NoReturn:
    click.echo(json.dumps(outcome))
    raise SystemExit(status)


@commands_cli.command("purge")
def purge() -> None:
    """Delete expired idempotency records and print how many."""
    removed = app_state().store.purge()
    click.echo(f"Deleted {removed} expired idempotency record{'s' if removed != 1 else ''}.")


@commands_cli.command("init-db")
def init_db() -> None:
    """Create the idempotency and outbox tables, if missing.

    The idempotency table of a SQLAlchemy store, and ``commands_outbox`` in each of the app's
    Flask-SQLAlchemy databases.
    """
    from .outbox import TABLE_NAME
    from .outbox import create_tables

    store = app_state().store
    engines = create_tables(current_app._get_current_object())  # type: ignore[attr-defined]
    if not hasattr(store, "create_table") and not engines:
        raise click.ClickException(
            f"The idempotency store {store!r} has no table to create, and the app has no"
            " Flask-SQLAlchemy database for the outbox."
        )
    if hasattr(store, "create_table"):
        store.create_table()
        click.echo(f"The idempotency table {t.cast(t.Any, store).table.name!r} is ready.")
    for engine in engines:
        where = engine.url.render_as_string(hide_password=True)
        click.echo(f"The outbox table {TABLE_NAME!r} is ready in {where}.")


@commands_cli.command("relay")
@click.option("--watch", is_flag=True, help="Keep relaying, a pass every --interval seconds, until stopped.")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Seconds between passes.",
)
@click.option(
    "--database",
    "databases",
    multiple=True,
    help="A database URL whose outbox to relay (repeatable); the app's Flask-SQLAlchemy ones by default.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    help="Leave jobs younger than this many seconds to the process that committed them.  [default: 10.0]",
)
def relay(watch: bool, interval: float, databases: tuple[str, ...], grace: float | None) -> None:
    """Publish the jobs left in the outbox, oldest first.

    Jobs stay in the outbox when the broker was down at commit or a process died between commit
    and publish. Exits 1 when the broker refused a job (the rest wait for the next pass).
    """
    import functools

    import sqlalchemy as sa

    from .outbox import GRACE
    from .outbox import app_engines
    from .outbox import relay as relay_outbox

    celery_app = current_app.extensions.get("celery")
    if celery_app is None:
        raise click.ClickException(
            "The app has no Celery app to publish with; call flask_commands.celery.init_celery(app) first."
        )
    own = [sa.create_engine(url) for url in databases]
    engines = own or app_engines(current_app._get_current_object())  # type: ignore[attr-defined]
    if not engines:
        raise click.ClickException(
            "The app has no Flask-SQLAlchemy database; name the outbox's database with --database URL."
        )
    try:
        one_pass = functools.partial(relay_outbox, grace=GRACE if grace is None else grace)
        _relay_passes(engines, celery_app, one_pass, watch, interval)
    finally:
        for engine in own:
            engine.dispose()


def _relay_passes(
    engines: list[t.Any], celery_app: t.Any, relay_outbox: t.Callable[..., int], watch: bool, interval: float
) -> None:
    import time

    while True:
        published, failed = 0, False
        for engine in engines:
            try:
                published += relay_outbox(engine, celery_app)
            except Exception as e:
                failed = True
                published += getattr(e, "published", 0)
                where = engine.url.render_as_string(hide_password=True)
                click.echo(f"Could not relay the outbox of {where}: {e}", err=True)
        if not watch or published:
            click.echo(f"Published {published} job{'s' if published != 1 else ''} from the outbox.")
        if not watch:
            if failed:
                raise SystemExit(1)
            return
        time.sleep(interval)
