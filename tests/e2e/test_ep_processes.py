"""Expert parallelism with the ranks as PROCESSES (--ep-launch processes, Gloo over loopback TCP):
the daemon spawns its ranks (or, with --nnodes 2, two "nodes" of two ranks meet at
--dist-init-addr), and greedy token ids and logprobs are bitwise equal to one process
(--ep-size 1: the oracle, world size 1). Bad launch flags are clear errors with a non-zero exit;
a rank killed with SIGKILL under load ends the in-flight requests with 503 / an error event and
every process exits non-zero, rank 0 naming the rank and the signal."""

import concurrent.futures
import json
import os
import re
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import MODEL_NAME, Daemon, moeserve_bin

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):",
           "Mixture of experts models route each token", "1, 2, 3, 5, 8,"]


def greedy(daemon: Daemon, pb) -> list:
    """(token ids, float32 logprob bits) per prompt, over gRPC, sent concurrently."""
    import grpc

    channel = grpc.insecure_channel(daemon.grpc_target)
    stub = pb[1].MoeserveStub(channel)

    def one(prompt: str):
        req = pb[0].GenerateRequest(text=prompt, sampling=pb[0].SamplingParameters(
            max_tokens=12, temperature=0, logprobs=True))
        ids, bits = [], []
        for resp in stub.Generate(req, timeout=120):
            for c in resp.choices:
                ids.extend(c.token_ids)
                bits.extend(struct.pack("<f", lp.logprob).hex() for lp in c.logprobs)
        return ids, bits

    try:
        with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
            return list(pool.map(one, PROMPTS))
    finally:
        channel.close()


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def placement_world(daemon: Daemon, pb) -> int:
    import grpc

    with grpc.insecure_channel(daemon.grpc_target) as channel:
        info = pb[1].MoeserveStub(channel).ModelInfo(pb[0].ModelInfoRequest(), timeout=30)
    return info.placement.world_size


@pytest.fixture(scope="module")
def reference(pb):
    d = Daemon(threads=1)
    try:
        out = greedy(d, pb)
    finally:
        assert d.terminate() == 0, d.log()
    assert all(len(ids) > 0 and len(ids) == len(bits) for ids, bits in out), out
    return out


@pytest.mark.parametrize("ep_size", [2, 4])
def test_spawned_ranks_serve_bitwise_the_same(reference, pb, ep_size):
    d = Daemon("--ep-size", str(ep_size), "--ep-launch", "processes", "--comm-timeout", "60",
               threads=2)
    try:
        assert len(child_pids(d.proc.pid)) == ep_size - 1, d.log()
        assert placement_world(d, pb) == ep_size
        assert greedy(d, pb) == reference
        # The other processes' traffic reaches rank 0's /metrics (gathered every 50 step
        # agreements, ~1 s idle): every rank reports the bytes it received.
        deadline = time.monotonic() + 30
        while True:
            text = httpx.get(d.base_url + "/metrics", timeout=30).text
            received = [re.search(rf'^moeserve_ep_bytes_received_total{{rank="{r}"}} (\S+)$',
                                  text, re.M) for r in range(ep_size)]
            if all(m and float(m.group(1)) > 0 for m in received) or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert all(m and float(m.group(1)) > 0 for m in received), text
    finally:
        code = d.terminate()
    assert code == 0, d.log()
    # Every spawned rank left the group cleanly with rank 0.
    assert len(re.findall(r"\[rank \d\] \[info\] rank \d: the group stopped", d.log())) == \
        ep_size - 1, d.log()


def test_two_nodes_of_two_ranks_over_tcp(reference, pb):
    """Two "nodes" (two launcher processes, --nnodes 2 --node-rank 0/1) of two ranks each meet at
    --dist-init-addr on loopback: 4 ranks, bitwise the same outputs as one process."""
    addr = f"127.0.0.1:{free_port()}"
    common = ["--ep-size", "4", "--ep-launch", "processes", "--nnodes", "2",
              "--dist-init-addr", addr, "--comm-timeout", "60"]
    # Node 1 first: it waits for node 0's store (the connect retries until --comm-timeout).
    log1 = Path(tempfile.mkstemp(prefix="moeserve-e2e-node1-", suffix=".log")[1])
    with open(log1, "wb") as f1:
        node1 = subprocess.Popen(
            [moeserve_bin(), "serve", "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0",
             "--threads", "2", "--node-rank", "1", *common], stdout=f1, stderr=subprocess.STDOUT,
            env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    try:
        d = Daemon("--node-rank", "0", *common, threads=2)
        try:
            assert placement_world(d, pb) == 4
            assert greedy(d, pb) == reference
        finally:
            code = d.terminate()
        assert code == 0, d.log()
        assert node1.wait(timeout=30) == 0, log1.read_text()
        assert "[rank 2]" in log1.read_text() and "[rank 3]" in log1.read_text()
    finally:
        if node1.poll() is None:
            node1.kill()
            node1.wait()


def test_launcher_environment_ranks(reference, pb, monkeypatch):
    """One process per rank as srun starts them (SLURM_PROCID / SLURM_NTASKS, rendezvous at
    MASTER_ADDR:MASTER_PORT; mpirun's OMPI_COMM_WORLD_* and PMI_* take the same path, see
    ep_topology_test): nobody spawns, and the outputs are bitwise those of one process."""
    port = str(free_port())
    env = {"SLURM_NTASKS": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    args = ["--ep-size", "2", "--ep-launch", "processes", "--comm-timeout", "60"]
    log1 = Path(tempfile.mkstemp(prefix="moeserve-e2e-srun1-", suffix=".log")[1])
    with open(log1, "wb") as f1:
        rank1 = subprocess.Popen(
            [moeserve_bin(), "serve", "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0",
             "--threads", "1", *args], stdout=f1, stderr=subprocess.STDOUT,
            env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE", SLURM_PROCID="1", **env))
    try:
        for k, v in {**env, "SLURM_PROCID": "0"}.items():
            monkeypatch.setenv(k, v)
        d = Daemon(*args, threads=1)
        try:
            assert child_pids(d.proc.pid) == []
            assert placement_world(d, pb) == 2
            assert greedy(d, pb) == reference
        finally:
            code = d.terminate()
        assert code == 0, d.log()
        assert rank1.wait(timeout=30) == 0, log1.read_text()
        assert "rank 1 of 2 (Slurm)" in log1.read_text(), log1.read_text()
    finally:
        if rank1.poll() is None:
            rank1.kill()
            rank1.wait()


def run_serve(*args: str, env: dict | None = None, timeout: float = 60):
    return subprocess.run([moeserve_bin(), "serve", "--host", "127.0.0.1", "--port", "0",
                           "--grpc-port", "0", "--threads", "1", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE", **(env or {})))


def test_bad_launch_flags_are_clear_errors():
    r = run_serve("--ep-size", "4", "--ep-launch", "processes", "--nnodes", "2", "--node-rank",
                  "2", "--dist-init-addr", "127.0.0.1:29999")
    assert r.returncode == 2 and "--node-rank 2 is outside [0, --nnodes 2)" in r.stderr, r.stderr
    r = run_serve("--ep-size", "4", "--ep-launch", "processes", "--nnodes", "2")
    assert r.returncode == 2 and "needs --dist-init-addr" in r.stderr, r.stderr
    r = run_serve("--ep-size", "3", "--ep-launch", "processes", "--nnodes", "2",
                  "--dist-init-addr", "127.0.0.1:29999")
    assert r.returncode == 2 and "not a multiple of --nnodes 2" in r.stderr, r.stderr
    r = run_serve("--ep-size", "2", "--nnodes", "2", "--dist-init-addr", "127.0.0.1:29999")
    assert r.returncode == 2 and "need --ep-launch processes" in r.stderr, r.stderr
    r = run_serve("--ep-size", "2", "--ep-launch", "processes", "--dist-init-addr", "nohost")
    assert r.returncode == 2 and "--dist-init-addr" in r.stderr, r.stderr
    # One process per rank from mpirun, but --ep-size disagrees with the launcher's size.
    r = run_serve("--ep-size", "2", "--ep-launch", "processes", "--dist-init-addr",
                  "127.0.0.1:29999",
                  env={"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"})
    assert r.returncode == 2 and "OpenMPI started 4 processes" in r.stderr, r.stderr
    # Node 1 whose node 0 never comes: a clear error within --comm-timeout, not a hang.
    t0 = time.monotonic()
    r = run_serve("--ep-size", "2", "--ep-launch", "processes", "--nnodes", "2", "--node-rank",
                  "1", "--dist-init-addr", f"127.0.0.1:{free_port()}", "--comm-timeout", "1")
    assert time.monotonic() - t0 < 30
    assert r.returncode == 1 and "could not reach --dist-init-addr" in r.stderr, r.stderr


LONG = {"model": MODEL_NAME, "prompt": "Once upon a time", "max_tokens": 4000,
        "ignore_eos": True}


def test_rank_killed_under_load_fails_requests_and_every_process(pb):
    d = Daemon("--ep-size", "4", "--ep-launch", "processes", "--max-model-len", "8192",
               "--comm-timeout", "60", threads=2)
    children = child_pids(d.proc.pid)
    assert len(children) == 3, d.log()
    results = {}

    def plain(i):
        try:
            r = httpx.post(d.base_url + "/v1/completions", json=LONG, timeout=120)
            results[f"plain{i}"] = (r.status_code, r.json())
        except httpx.HTTPError as e:
            results[f"plain{i}"] = ("error", repr(e))

    streamed = threading.Event()

    def stream():
        events = []
        try:
            with httpx.stream("POST", d.base_url + "/v1/completions", timeout=120,
                              json={**LONG, "stream": True}) as r:
                for line in r.iter_lines():
                    if line:
                        events.append(line)
                        streamed.set()
        except httpx.HTTPError as e:
            events.append(f"transport error: {e!r}")
        results["stream"] = events
        streamed.set()

    threads = [threading.Thread(target=plain, args=(i,)) for i in range(2)]
    threads.append(threading.Thread(target=stream))
    for t in threads:
        t.start()
    assert streamed.wait(60), d.log()
    time.sleep(0.3)  # every request is running
    victim = children[1]  # a spawned rank (our grandchild): SIGKILL, no chance to clean up
    os.kill(victim, signal.SIGKILL)
    try:
        code = d.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        raise AssertionError(f"rank 0 still running 30 s after a rank was killed:\n{d.log()}")
    for t in threads:
        t.join(timeout=30)
    log = d.log()
    d.terminate()
    assert code == 1, log
    assert re.search(rf"^error: rank 0: expert-parallel group failed: .*rank \d \(pid {victim}\) "
                     r"was killed by signal 9", log, re.M), log
    # The other spawned ranks saw the group fail too and exited non-zero (rank 0 reaped them).
    for pid in children:
        if pid != victim:
            assert re.search(rf"rank \d \(pid {pid}\) (exited with status [1-9]|did not exit)",
                             log), log
    # Each of them said why: the collective, its rank, and Gloo's error (with the peer's rank
    # when the address Gloo prints is one the rendezvous published; best effort).
    survivors = re.findall(r"^error: rank ([123]): expert-parallel group failed: \S+.* on rank \1 ",
                           log, re.M)
    assert len(survivors) == 2, log
    for i in range(2):
        status, body = results[f"plain{i}"]
        assert status == 503, results[f"plain{i}"]
        assert "expert-parallel" in body["error"]["message"], body
    events = results["stream"]
    assert events[-1] == "data: [DONE]", events[-3:]
    error = json.loads(events[-2][len("data: "):])
    assert "expert-parallel" in error["error"]["message"], events[-2]


def test_rank_that_stops_answering_fails_the_group_at_comm_timeout():
    """A rank that is alive but silent (SIGSTOP) is noticed at --comm-timeout: rank 0's request
    ends with 503, rank 0 exits 1 saying which collective timed out."""
    d = Daemon("--ep-size", "2", "--ep-launch", "processes", "--max-model-len", "8192",
               "--comm-timeout", "3", threads=2)
    (child,) = child_pids(d.proc.pid)
    os.kill(child, signal.SIGSTOP)
    try:
        r = httpx.post(d.base_url + "/v1/completions", json={**LONG, "max_tokens": 16},
                       timeout=60)
        assert r.status_code == 503, r.text
        assert "expert-parallel" in r.json()["error"]["message"], r.text
        code = d.proc.wait(timeout=30)
    finally:
        try:
            os.kill(child, signal.SIGCONT)
        except ProcessLookupError:
            pass
        log = d.log()
        d.terminate()
    assert code == 1, log
    assert re.search(r"^error: rank 0: expert-parallel group failed: .*Timed out", log, re.M), log


def test_spawned_ranks_exit_when_rank_0_is_killed():
    """No orphans: rank 0 killed with SIGKILL (no chance to stop its ranks) closes its sockets,
    and every spawned rank fails its next step agreement and exits."""
    d = Daemon("--ep-size", "4", "--ep-launch", "processes", "--comm-timeout", "60", threads=2)
    children = child_pids(d.proc.pid)
    assert len(children) == 3, d.log()
    d.proc.kill()
    d.proc.wait()
    deadline = time.monotonic() + 30
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if running(p)]
        time.sleep(0.05)
    log = d.log()
    d.terminate()
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert not alive, log
    assert len(re.findall(r"^error: rank [123]: expert-parallel group failed", log, re.M)) == 3, log
