"""Smoke tests of bench/: each benchmark runs for about a second and prints its ratios.

No figure is asserted (performance is measured by the benches themselves, in one run); these only
make sure a bench cannot break unnoticed.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from tests.conftest import require_service
from tests.conftest import require_wrk

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"


def _run(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``bench/<script>`` as a user would (its folder first on ``sys.path``); return stdout."""
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=BENCH.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_bench_no_file_shadows_stdlib() -> None:
    # A script's folder comes first on sys.path: bench/http.py hid the standard library's http.
    names = {path.stem for path in BENCH.glob("*.py")}
    assert names.isdisjoint(sys.stdlib_module_names)


def test_bench_build_runs() -> None:
    out = _run("build.py", "--seconds", "0.5")
    assert "plain form / build" in out
    assert "build / pydantic" in out


def test_bench_peers_runs() -> None:
    out = _run("peers.py", "--seconds", "1", "--batch", "20")
    assert "command (valid)" in out
    assert "command (invalid)" in out


def test_bench_peers_http_runs() -> None:
    require_wrk()
    http = ["--http", "--http-seconds", "1", "--http-rounds", "1"]
    out = _run("peers.py", "--seconds", "0.3", "--batch", "10", *http, "--http-setting", "sync -w 1")
    assert "gunicorn sync -w 1" in out
    assert "CPU/request bare" in out
    assert "gthread" not in out


def test_bench_peers_profile_runs() -> None:
    out = _run("peers.py", "--profile", "command:invalid")
    assert "function calls" in out


def test_bench_idempotency_runs() -> None:
    url = require_service("postgresql")
    out = _run("idempotency.py", "--commands", "30", "--postgresql", url)
    assert "SQLite" in out


def test_bench_jobs_runs() -> None:
    env = {"BENCH_BROKER": require_service("redis"), "BENCH_DATABASE": require_service("postgresql")}
    out = _run("jobs.py", "--jobs", "10", "--rounds", "1", "--concurrency", "1", env=env, timeout=240)
    assert "ratio command/bare" in out


def test_bench_http_view_runs() -> None:
    require_wrk()
    out = _run("http_view.py", "--seconds", "1", "--rounds", "1", "--connections", "2")
    assert "command / bare" in out


def test_bench_otel_runs() -> None:
    require_wrk()
    out = _run("otel.py", "--seconds", "1", "--rounds", "1", "--connections", "2")
    assert "on / off over HTTP" in out


def test_bench_outbox_runs() -> None:
    database, broker = require_service("postgresql"), require_service("redis")
    out = _run("outbox.py", "--commands", "5", "--rounds", "1", "--database", database, "--broker", broker)
    assert "ratio outbox/direct" in out
