"""A Spark standalone cluster on 127.0.0.1 for the tests: one master and n workers started from
the pyspark installation's own ``bin/spark-class`` (SPARK_HOME = the pyspark package), each in
its own process group so a test can stop, or kill, exactly the processes it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
SPARK_SUBMIT = SPARK_HOME / "bin" / "spark-submit"
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def spark_env(root: Path) -> dict[str, str]:
    """Environment of every Spark process of the test cluster (and of spark-submit): this
    pyspark as SPARK_HOME, addresses on 127.0.0.1, logs and scratch space under ``root``."""
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": HOST,
        "SPARK_LOG_DIR": str(root / "logs"),
        "SPARK_LOCAL_DIRS": str(root / "local"),
        # Nothing of the developer's own Spark set-up leaks in.
        "SPARK_CONF_DIR": str(root / "conf"),
    })
    for name in ("logs", "local", "conf"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process group: the daemon and everything it started (a worker's executor
        JVMs and their Python workers)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class StandaloneCluster:
    root: Path
    n_workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    port: int = field(default_factory=free_port)
    webui_port: int = field(default_factory=free_port)
    master: Process | None = None
    workers: list[Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://{HOST}:{self.port}"

    def _start(self, name: str, args: list[str]) -> Process:
        log = self.root / "logs" / f"{name}.out"
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "wb")
        popen = subprocess.Popen([str(SPARK_CLASS), *args], env=spark_env(self.root),
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)  # own process group: killpg reaches only it
        out.close()
        return Process(name, popen, log)

    def start(self, timeout: float = 120.0) -> "StandaloneCluster":
        """Start the master and the workers; return once every worker is registered ALIVE."""
        self.master = self._start("master", [
            "org.apache.spark.deploy.master.Master",
            "--host", HOST, "--port", str(self.port), "--webui-port", str(self.webui_port)])
        for i in range(self.n_workers):
            work_dir = self.root / f"worker{i}"
            work_dir.mkdir(parents=True, exist_ok=True)
            self.workers.append(self._start(f"worker{i}", [
                "org.apache.spark.deploy.worker.Worker",
                "--host", HOST, "--cores", str(self.worker_cores), "--memory", self.worker_memory,
                "--webui-port", str(free_port()), "--work-dir", str(work_dir), self.url]))
        self.wait_for_workers(self.n_workers, timeout)
        return self

    def state(self) -> dict:
        """The master's JSON status page (workers, applications)."""
        with urllib.request.urlopen(f"http://{HOST}:{self.webui_port}/json", timeout=5) as r:
            return json.load(r)

    def alive_workers(self) -> int:
        return sum(1 for w in self.state().get("workers", []) if w.get("state") == "ALIVE")

    def wait_for_workers(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | str = "no answer yet"
        while time.monotonic() < deadline:
            for p in [self.master, *self.workers]:
                if not p.alive():
                    raise RuntimeError(f"{p.name} exited with {p.popen.returncode}: "
                                       f"{p.log.read_text()[-3000:]}")
            try:
                alive = self.alive_workers()
                if alive >= n:
                    return
                last = f"{alive} of {n} workers alive"
            except OSError as exc:
                last = exc
            time.sleep(1.0)
        raise TimeoutError(f"the standalone cluster at {self.url} did not come up in {timeout:.0f}s: {last}")

    def stop(self) -> None:
        """Stop workers (and their executors) and the master: SIGTERM to each process group,
        SIGKILL to whatever is still there after 10 s."""
        procs = [*self.workers, *([self.master] if self.master else [])]
        for p in procs:
            p.kill_group(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            p.kill_group(signal.SIGKILL)
            p.popen.wait()
