"""Fixtures shared by the whole suite: apps, databases, and the service-skip rule."""

from __future__ import annotations

import os
import socket
import typing as t

import pytest

SERVICES = {
    "postgresql": ("127.0.0.1", 5432, "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": ("127.0.0.1", 3306, "mysql+pymysql://root@127.0.0.1:3306/test"),
    "redis": ("127.0.0.1", 6379, "redis://127.0.0.1:6379/0"),
    "rabbitmq": ("127.0.0.1", 5672, "amqp://guest:guest@127.0.0.1:5672//"),
}
CHROMIUM = "/usr/bin/chromium"


def _missing(reason: str) -> t.NoReturn:
    """Skip the test, or fail it when COMMANDS_REQUIRE_SERVICES=1 (as CI sets)."""
    if os.environ.get("COMMANDS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (COMMANDS_REQUIRE_SERVICES=1, so this fails instead of skipping)")
    pytest.skip(reason)


def require_service(name: str) -> str:
    """Return the URL of service ``name``, or skip (or fail, under CI) when it is not listening."""
    host, port, url = SERVICES[name]
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as e:
        _missing(f"{name} is not reachable at {host}:{port}: {e}")
    return url


def require_chromium() -> str:
    """Return the path of Debian's Chromium, or skip (or fail, under CI) when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
