"""Shared by the HTTP benches (http_view.py, otel.py, peers.py): gunicorn on loopback, driven by wrk.

Not a bench itself. Each server is a child process running the bench script again with
``--serve NAME --port PORT`` (the script calls :func:`serve`); :func:`servers` starts them and
stops them (SIGTERM), :func:`wrk` measures one bounded run and :func:`cpu_seconds` the CPU time a
server used.

The benches run as ``python -P bench/x.py``, which leaves ``bench/`` off ``sys.path``: they
append their own folder before importing this module (appended, so it shadows nothing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import typing as t
import uuid

# Each wrk thread sends its own run of keys, "<nonce>-<thread>-<n>", new for every request when
# the third argument is "1"; none when it is "0".
WRK_SCRIPT = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
local prefix = ""
local body = ""
local keyed = true
function init(args)
  prefix = args[1] .. "-" .. tid .. "-"
  body = args[2]
  keyed = args[3] ~= "0"
end
function request()
  counter = counter + 1
  local headers = {["Content-Type"] = "application/json"}
  if keyed then headers["Idempotency-Key"] = prefix .. counter end
  return wrk.format("POST", "/todos", headers, body)
end
"""

#: gunicorn's options common to every bench server; each adds its worker settings.
BASE_OPTIONS: dict[str, t.Any] = {"keepalive": 5, "accesslog": None, "loglevel": "warning"}

#: One worker process of four threads: the setting http_view.py and otel.py measure.
GTHREAD = {"workers": 1, "worker_class": "gthread", "threads": 4}


def require_wrk() -> None:
    """Exit with the install hint when wrk is missing."""
    if subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode != 0:
        raise SystemExit("wrk is not installed; on Debian: apt-get install wrk")


def serve(load: t.Callable[[], t.Any], port: int, settings: t.Mapping[str, t.Any]) -> None:
    """Serve the WSGI app ``load()`` returns with gunicorn on 127.0.0.1:``port`` until stopped.

    ``load`` runs in the worker, after the fork (an SDK's export thread must start there).
    """
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    options = {"bind": f"127.0.0.1:{port}", **BASE_OPTIONS, **settings}

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> t.Any:
            return load()

    Server().run()


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Return once the server on ``port`` takes connections; exit if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server on port {port} exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server on port {port} did not start within {timeout:.0f} s")


@dataclasses.dataclass
class Server:
    """A bench server in a child process."""

    port: int
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def servers(script: str, names: t.Iterable[str], *extra: str) -> t.Iterator[dict[str, Server]]:
    """Start ``python -P script --serve NAME --port PORT *extra`` for each name; stop them after."""
    started: dict[str, Server] = {}
    try:
        for name in names:
            port = free_port()
            command = [sys.executable, "-P", os.path.abspath(script), "--serve", name, "--port", str(port)]
            started[name] = Server(port, subprocess.Popen([*command, *extra]))
        for server in started.values():
            wait_ready(server.port, server.process)
        yield started
    finally:
        for server in started.values():
            server.process.terminate()  # gunicorn's graceful shutdown: the workers are idle by now
        for server in started.values():
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


def cpu_seconds(master: int) -> float:
    """CPU seconds used so far by the gunicorn master ``master`` and its workers (from /proc).

    Time spent waiting for a CPU that another process holds lowers a server's throughput but is
    not CPU time, so CPU per request is the figure that load on a shared machine blurs less
    (cache contention still shows in both). ``0.0`` without /proc.
    """
    total = 0.0
    pids = [master]
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            pids += [int(p) for p in f.read().split()]
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0
    return total


@contextlib.contextmanager
def wrk_script() -> t.Iterator[str]:
    """The path of a temporary file holding :data:`WRK_SCRIPT`."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        yield script.name


@dataclasses.dataclass
class Run:
    """One wrk run: requests per second and requests made."""

    rate: float
    requests: int


def wrk(
    port: int,
    seconds: float,
    script: str,
    body: t.Any,
    *,
    connections: int = 8,
    keyed: bool = True,
    expect_2xx: bool = True,
) -> Run:
    """One bounded wrk run of ``POST /todos`` with ``body`` as JSON; exits on failures.

    :param expect_2xx: exit if any response was not 2xx or 3xx (off for a path answering 422).
    """
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script, f"http://127.0.0.1:{port}"]
    command += ["--", uuid.uuid4().hex, json.dumps(body), "1" if keyed else "0"]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=seconds + 30).stdout
    bad = expect_2xx and re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if bad or re.search(r"Socket errors: .*", output):
        raise SystemExit(f"wrk saw failures on port {port}:\n{output}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if found is None:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{output}")
    total = re.search(r"(\d+) requests in", output)
    return Run(float(found.group(1)), int(total.group(1)) if total else 0)
