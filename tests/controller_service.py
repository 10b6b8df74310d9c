"""`gridtwin controller serve` as a subprocess for the service tests: start it on a config and
wait for its API, stop it, and wait for a condition (generous timeouts: the box may be busy)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from polling import wait  # noqa: F401 (the tests that start services import it from here)

ROOT = Path(__file__).resolve().parent.parent
OP_TOKEN = "op-secret"
OP = {"Authorization": f"Bearer {OP_TOKEN}"}


def start(cfg: Path, port: int, log, timeout_s: float = 60.0) -> subprocess.Popen:
    """The service on `cfg` (API on `port`, operator token OP), once /api/whoami answers."""
    env = dict(os.environ, GRIDTWIN_API_TOKENS=f"{OP_TOKEN}:olga:operator")
    p = subprocess.Popen([sys.executable, "-m", "gridtwin_cli", "controller", "serve", "--config", str(cfg)],
                         cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    end = time.time() + timeout_s
    while time.time() < end:
        if p.poll() is not None:
            raise RuntimeError(f"controller exited with {p.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/whoami", headers=OP, timeout=2).status_code == 200:
                return p
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    p.kill()
    raise RuntimeError(f"controller API did not come up in {timeout_s:.0f} s")


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
