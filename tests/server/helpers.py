"""Real processes for the tests (and the benchmarks): commands run as a user runs them, servers on
free local ports, their memory and their metrics."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of one process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def anon_mb(pid: int) -> float:
    """Anonymous resident memory of one process (heap and the like: what a leak grows), in MB.
    File pages, such as a mapped model's, are not counted: they are the shared page cache and
    grow as more of the file is read."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def private_mb(pid: int) -> float:
    """Memory only this process holds (Private_Clean + Private_Dirty), in MB: pages shared with
    other workers through the page cache, such as a mapped model file, are not counted."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def start_process(
    args: list[str],
    env: dict[str, str] | None = None,
    ready: str = "/health",
    timeout: float = 120,
    command: list[str] | None = None,
    cwd: Path = ROOT,
):
    """Start `python ARGS --port P` (or `COMMAND ARGS --port P`) in `cwd` and wait until `ready`
    answers 200. `env` replaces the environment (default: this one); LOG_LEVEL defaults to WARNING.
    Returns (process, base URL). Output goes to a file: a pipe nobody reads would stall it."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="server-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [*(command or [sys.executable]), *args, "--port", str(port)],
        cwd=cwd,
        env={"LOG_LEVEL": "WARNING", **(os.environ if env is None else env)},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.log_path = log.name
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {Path(log.name).read_text()}")
        try:
            if httpx.get(f"{base}{ready}", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not become ready in {timeout:.0f} s")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no settings leaking in from the caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper()
        not in {
            *("DATA_PATH", "MODEL_PATH", "DEMO_DATA_PATH", "ADMIN_TOKEN", "PORT", "HOST", "WORKERS"),
            *("REDIS_URL", "REDIS_PREFIX", "INSTANCE_NAME", "LIVE_PATH", "INGEST_TOKEN", "EVENTS_PATH"),
        }
    }
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run a project script the way a user does: `python script.py ...` from the repository root."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout
    )


def start_server(model_path, *args: str, **env: str):
    """`python platform.py --model MODEL_PATH ARGS` serving `model_path` as a real process; (process, base URL)."""
    return start_process(["platform.py", "--model", str(model_path), *args], env=clean_env(**env))


def stop_server(proc: subprocess.Popen) -> str:
    """Stop a server from start_server and return what it printed."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return Path(proc.log_path).read_text()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric `name` in Prometheus text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}(?:{{(.*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


REDIS_MISSING = (
    "redis-server (Redis 7 or Valkey) is not on PATH: `make test` installs Debian's redis-server when run as "
    "root; else install it (apt-get install redis-server, or your system's Redis 7 package)"
)


class RedisServer:
    """A real redis-server on a free port of loopback, in its own temporary folder, with a password
    and no persistence unless `durable` (a restart starts it empty, like a lost store). `stop()` kills it (SIGKILL:
    the store lost, not shut down), `start()` starts it again on the same port."""

    def __init__(
        self, folder: Path, password: str = "store-test-password-x7", tls: bool = False, durable: bool = False
    ):
        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:
            pytest.fail(REDIS_MISSING)
        self.binary, self.folder, self.password = binary, folder, password
        self.port = free_port()
        self.url = f"redis://:{password}@127.0.0.1:{self.port}/0"
        self.tls: list[str] = []
        self.context: ssl.SSLContext | None = None
        if tls:  # its own CA and a certificate for 127.0.0.1; clients check it against the CA
            ca = make_certificates(folder / "tls")
            self.tls = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            self.tls += [
                "--tls-cert-file",
                str(ca.parent / "server.crt"),
                "--tls-key-file",
                str(ca.parent / "server.key"),
            ]
            self.tls += ["--tls-ca-cert-file", str(ca)]
            self.url = f"rediss://:{password}@127.0.0.1:{self.port}/0?ssl_ca_certs={ca}"
            self.context = ssl.create_default_context(cafile=str(ca))
        self.proc: subprocess.Popen | None = None
        # durable: an append-only file synced on every write (what POST /events needs of Redis 7.0),
        # so a restart after a kill finds what was acknowledged.
        self.persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
            + ["--save", "", *self.persistence, "--requirepass", self.password, "--daemonize", "no"]
            + self.tls,
            stdout=open(self.folder / "redis.log", "a"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with self._connect() as conn:
                    conn.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                    answer = b""
                    while b"PONG" not in answer and (chunk := conn.recv(100)):
                        answer += chunk
                    if b"PONG" in answer:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}: {(self.folder / 'redis.log').read_text()}")

    def _connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        return self.context.wrap_socket(conn, server_hostname="127.0.0.1") if self.context else conn

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def make_certificates(folder: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl); the CA's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=ca")

    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=x")
    openssl(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-out", "server.crt", "-days", "2", "-extfile", "san.ext"),
    )
    return folder / "ca.crt"
