"""Instructions per request of the gateway process, counted with callgrind: a figure machine load does not move.

    .venv/bin/python bench/gateway_instructions.py [--requests 1000] [--warmup 300] [--apps deployer,all]
        [--no-monitor]

Needs valgrind (`apt-get install valgrind`). Per app (`deployer`: `tessera.asgi:deployer`; `all`: the
all-in-one app `tessera up` runs), a uvicorn process of the gateway runs under `valgrind --tool=callgrind
--instr-atstart=no` in front of a trivial keep-alive HTTP upstream (a fixed JSON answer, in a process of its
own, so that only the gateway's work is counted), on a scratch SQLite database holding a healthy deployment
routed to it and linked to a monitor (prediction logging on, as by default; `--no-monitor` unlinks it).
After `--warmup` requests, counting is switched on (`callgrind_control -i on`), `--requests` sequential
keep-alive POSTs go through one raw socket, and the count is dumped: instructions of the whole process,
every thread included, divided by the requests. User-space instructions only: system calls (the loopback
reads and writes) come on top. Takes about a minute per app on two cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import stopping
from serving_overhead import seed_deployment
from sqlalchemy import update

from services.deployer.domain.process_manager import ModelServerState, free_port
from shared.core.settings import Settings
from shared.db.models import ModelMonitoring
from shared.db.session import get_database

# A keep-alive HTTP/1.1 server answering every request with the same small JSON, as a model server would.
UPSTREAM = r"""
import asyncio, sys
BODY = b'{"predictions": [0]}'
ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY)) + BODY

class Upstream(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                           if line.startswith(b"content-length:")), 0)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.transport.write(ANSWER)

async def main():
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()

asyncio.run(main())
"""
BODY = b'{"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[5.1, 3.5, 1.4, 0.2]]}}'


def send_requests(port: int, path: str, api_key: str, count: int) -> None:
    """`count` sequential POSTs on one keep-alive connection; every answer must be a 200."""
    request = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {api_key}\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        for _ in range(count):
            conn.sendall(request)
            while b"\r\n\r\n" not in buffer:
                buffer += conn.recv(65536)
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            if not lines[0].startswith(b"http/1.1 200"):
                raise RuntimeError(f"the gateway answered {lines[0].decode()}")
            length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:"))
            while len(buffer) < length:
                buffer += conn.recv(65536)
            buffer = buffer[length:]


def count_instructions(app: str, env: dict[str, str], path: str, api_key: str, args: argparse.Namespace) -> float:
    port = free_port()
    out = Path(env["TESSERA_DATA_DIR"]).parent / f"callgrind-{app}.out"
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    command += [sys.executable, "-m", "uvicorn", f"tessera.asgi:{app}", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-access-log", "--log-level", "warning"]
    gateway = subprocess.Popen(command, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300  # starting Python under valgrind takes a while
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=10)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or gateway.poll() is not None:
                    raise RuntimeError(f"the {app} app did not start under valgrind") from None
                time.sleep(0.5)
        send_requests(port, path, api_key, args.warmup)
        subprocess.run(["callgrind_control", "-i", "on", str(gateway.pid)], check=True, capture_output=True)
        send_requests(port, path, api_key, args.requests)
        subprocess.run(["callgrind_control", "-d", str(gateway.pid)], check=True, capture_output=True)
        time.sleep(1)
        totals = [
            int(line.split()[1])
            for dump in out.parent.glob(f"{out.name}*")
            for line in dump.read_text().splitlines()
            if line.startswith(("summary:", "totals:"))
        ]
        return max(totals) / args.requests
    finally:
        gateway.terminate()
        gateway.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="counted requests per app")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--apps", default="deployer,all", help="gateway apps: deployer (the service alone), all")
    parser.add_argument("--no-monitor", action="store_true", help="deployment without a monitor: no prediction log")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    apps = [app.strip() for app in args.apps.split(",") if app.strip()]

    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        env = {
            "TESSERA_DATA_DIR": str(scratch / "data"),
            "TESSERA_DATABASE_URL": f"sqlite:///{scratch / 'bench.db'}",
            "TESSERA_LOG_LEVEL": "WARNING",
            # Time-based work (routing-table reloads, prediction-log flushes on the tick) would be counted per
            # request many times over at valgrind's pace: tables live, and batches leave full, as under load.
            "TESSERA_DEPLOYER_ROUTE_TTL_S": "3600",
            "TESSERA_DEPLOYER_LOG_FLUSH_INTERVAL_S": "3600",
        }
        settings = Settings(data_dir=scratch / "data", database_url=env["TESSERA_DATABASE_URL"])
        upstream_port = free_port()
        upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port)], stdin=subprocess.DEVNULL)
        results: dict[str, float] = {}
        try:
            server = ModelServerState(upstream.pid, upstream_port, datetime.now(UTC), os.devnull)
            deployment_id, api_key = seed_deployment(settings, scratch / "model", server)
            if args.no_monitor:
                with get_database(settings.database_url).session_scope() as session:
                    session.execute(update(ModelMonitoring).values(deployment_id=None))
            path = f"/deployments/{deployment_id}/invocations"
            for app in apps:
                results[app] = count_instructions(app, env, path, api_key, args)
                print(f"{app}: {results[app] / 1e6:.3f} M instructions per request ({args.requests} requests)")
        finally:
            upstream.terminate()
            upstream.wait(timeout=10)
    monitor = "without a monitor" if args.no_monitor else "prediction logging on"
    print(
        f"gateway instructions per request, {monitor}: " + ", ".join(f"{a} {v / 1e6:.3f} M" for a, v in results.items())
    )


if __name__ == "__main__":
    stopping.run(main)
