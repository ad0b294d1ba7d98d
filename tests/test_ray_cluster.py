"""A Ray cluster that exists before factmem: a head and a worker node started with `ray start`
(each with its own CPU), `factmem grid --backend ray --address` against it, the runs folder
shared. Stages spread over both nodes, dependencies hold, results equal the local backend's.
The cluster is stopped at the end, whatever happens."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_grid import _grid_file, _science

from factmem.grid import load_grid, run_grid

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")  # installed with Ray
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str, env: dict) -> None:
    done = subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, env=env,
                          timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@contextmanager
def _cluster(worker_env: dict | None = None) -> Iterator[tuple[str, dict]]:
    """A head and a worker node of one CPU each (`ray start`), the worker's environment with
    `worker_env` added; yields (address, environment for the driver). `ray stop --force`
    ends it, whatever happened."""
    port = _free_port()
    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's sockets need a short path
    # Ray >= 2.5x turns token authentication on for clusters started by hand: every process
    # (head, worker, the factmem driver) gets the same token
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": short,
                        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    address = f"127.0.0.1:{port}"
    try:
        _ray("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
             "--disable-usage-stats", "--node-ip-address=127.0.0.1", env=env)  # fmt: skip
        _ray("start", f"--address={address}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
             env=env | (worker_env or {}))  # fmt: skip
        yield address, env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, env=env,
                       timeout=120)  # fmt: skip
        shutil.rmtree(short, ignore_errors=True)


def _grid_command(grid_file, address: str) -> list[str]:
    return [str(BIN / "factmem"), "grid", str(grid_file), "--backend", "ray", "--address",
            address, "--quiet"]  # fmt: skip


def test_a_grid_on_an_existing_two_node_cluster(tiny_model_dir, tmp_path):
    local = load_grid(_grid_file(tmp_path / "local", tiny_model_dir))
    run_grid(local, progress=False)
    grid_file = _grid_file(tmp_path / "cluster", tiny_model_dir)
    with _cluster() as (address, env):
        ran = subprocess.run(_grid_command(grid_file, address), capture_output=True, text=True,
                             env=env, timeout=900)  # fmt: skip
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    remote = load_grid(grid_file)
    assert _science(remote) == _science(local)
    nodes = set()
    for run in remote.runs:
        for line in (run.run_dir / "run.log").read_text().splitlines():
            if "on Ray node" in line:
                nodes.add(line.rsplit(" ", 1)[-1])
    assert len(nodes) == 2, nodes  # both nodes trained stages
    shared = json.loads((remote.runs[2].run_dir / "stage1" / "stage.json").read_text())
    assert shared["shared_from"].endswith("no-mixing_seed0/stage1")  # dependency respected


def _worker_raylet() -> psutil.Process:
    """The raylet of the node started with FACTMEM_TEST_NODE=worker in its environment."""
    for proc in psutil.process_iter(["cmdline"]):
        command = proc.info["cmdline"]
        if command and command[0].endswith("/raylet") and (
            proc.environ().get("FACTMEM_TEST_NODE") == "worker"
        ):
            return proc
    raise AssertionError("no worker raylet")


def test_a_worker_node_killed_mid_grid_its_stage_runs_again_elsewhere(tiny_model_dir, tmp_path):
    """The worker node is killed (its raylet and every task process it runs, SIGKILL) while
    it trains a stage: Ray runs that stage again on the head, where it starts over from the
    shared runs folder, and the grid ends with the local backend's results."""
    local = load_grid(_grid_file(tmp_path / "local", tiny_model_dir))
    run_grid(local, progress=False)
    grid_file = _grid_file(tmp_path / "cluster", tiny_model_dir)
    # stages on the worker pause 30 s as they write their training set: the kill lands
    # inside a stage, not by luck
    with _cluster({"FACTMEM_TEST_NODE": "worker", "FACTMEM_PAUSE_AT": "data.jsonl:30"}) as (
        address, env
    ):
        raylet = _worker_raylet()
        worker_id = next(a.split("=", 1)[1] for a in raylet.cmdline() if a.startswith("--node_id="))
        grid = subprocess.Popen(_grid_command(grid_file, address), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        deadline = time.time() + 300
        while not any(f"on Ray node {worker_id}" in f.read_text()
                      for f in (tmp_path / "cluster").glob("runs/*/*/run.log")):  # fmt: skip
            assert time.time() < deadline and grid.poll() is None, "no stage reached the worker"
            time.sleep(0.5)
        for proc in [raylet, *raylet.children(recursive=True)]:
            proc.kill()
        out, err = grid.communicate(timeout=900)
        assert grid.returncode == 0, out[-3000:] + err[-3000:]
    remote = load_grid(grid_file)
    assert _science(remote) == _science(local)
    starts = [line for run in remote.runs for line in run.folder.log.read_text().splitlines()
              if "on Ray node" in line]  # fmt: skip
    killed = [line for line in starts if line.endswith(worker_id)]
    assert killed, starts
    stage = killed[0].split(" on Ray node")[0].split("INFO factmem.grid: ")[-1]
    again = [line for line in starts if stage in line and not line.endswith(worker_id)]
    assert again, starts  # the killed stage ran again, on the head
