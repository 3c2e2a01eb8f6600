"""End-to-end fixtures: a real `moeserve serve` daemon on free loopback ports, the official
`openai` client, and Python gRPC stubs generated from proto/ at test time.

Environment:
  MOESERVE_BIN  the moeserve binary (CTest passes it; default build/server/moeserve)
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "moeserve-tiny"


def moeserve_bin() -> str:
    path = os.environ.get("MOESERVE_BIN", str(REPO / "build" / "server" / "moeserve"))
    if not os.access(path, os.X_OK):
        pytest.exit(f"moeserve binary not found at {path} (set MOESERVE_BIN)", returncode=2)
    return path


class Daemon:
    """One `moeserve serve` process. Ports are chosen by the daemon (--port 0) and read back from
    the effective configuration it prints at start-up."""

    def __init__(self, *extra_args: str, threads: int = 2):
        self.log_path = Path(tempfile.mkstemp(prefix="moeserve-e2e-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        args = [moeserve_bin(), "serve", "--host", "127.0.0.1", "--port", "0",
                "--grpc-port", "0", "--threads", str(threads), *extra_args]
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.http_port, self.grpc_port = self._wait_for_ports()
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self._wait_healthy()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_for_ports(self, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            http = re.search(r"^port = (\d+)$", text, re.M)
            grpc = re.search(r"^grpc_port = (\d+)$", text, re.M)
            if http and grpc:
                return int(http.group(1)), int(grpc.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"moeserve serve exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise RuntimeError(f"moeserve serve did not report its ports:\n{self.log()}")

    def _wait_healthy(self, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"moeserve serve is not healthy:\n{self.log()}")

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._log.close()

    def openai(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.base_url + "/v1", api_key="unused", **kwargs)


@pytest.fixture(scope="session")
def daemon():
    """The shared daemon: default limits, embedded tiny model."""
    d = Daemon("--max-model-len", "512")
    yield d
    code = d.terminate()
    assert code == 0, d.log()


@pytest.fixture(scope="session")
def client(daemon):
    return daemon.openai()


@pytest.fixture(scope="session")
def pb():
    """(moeserve_pb2, moeserve_pb2_grpc), generated from proto/moeserve.proto with grpcio-tools."""
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="moeserve-stubs-"))
    code = protoc.main(["grpc_tools.protoc", f"--proto_path={REPO}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(REPO / "proto" / "moeserve.proto")])
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(out))
    from proto import moeserve_pb2, moeserve_pb2_grpc  # noqa: E402  (generated above)

    return moeserve_pb2, moeserve_pb2_grpc


@pytest.fixture(scope="session")
def grpc_stub(daemon, pb):
    import grpc

    channel = grpc.insecure_channel(daemon.grpc_target)
    yield pb[1].MoeserveStub(channel)
    channel.close()


def post(daemon, path: str, body, **kwargs) -> httpx.Response:
    """POST raw JSON (a dict) or raw bytes, without the openai client's own validation."""
    if isinstance(body, (bytes, str)):
        return httpx.post(daemon.base_url + path, content=body,
                          headers={"Content-Type": "application/json"}, timeout=60, **kwargs)
    return httpx.post(daemon.base_url + path, json=body, timeout=60, **kwargs)
