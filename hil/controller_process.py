"""The coordinator's handle on the controller process: spawn `python -m hil.agent`, shake
hands over the control channel, tick it, stop it, kill it (controller-restart tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hil.protocol import PROTOCOL_VERSION, ChannelError, Listener

REPO_ROOT = Path(__file__).resolve().parent.parent


class ControllerProcess:
    """One controller process; `init` is the dict sent after `hello` (see hil/README.md)."""

    def __init__(self, init: dict, log_path: Path, connect_timeout_s: float = 60.0,
                 ready_timeout_s: float = 120.0):
        self.init = init
        self.log_path = Path(log_path)
        self.connect_timeout_s = connect_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.chan = None
        self.ready: dict = {}
        self.starts = 0

    def start(self) -> dict:
        listener = Listener("127.0.0.1", 0)
        try:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hil.agent", "--connect", f"{listener.host}:{listener.port}"],
                cwd=str(REPO_ROOT), env=env, stdout=self._log, stderr=subprocess.STDOUT)
            self.chan = listener.accept(self.connect_timeout_s, alive=lambda: self.proc.poll() is None)
        except ChannelError as e:
            self.kill()
            raise ChannelError(f"{e}; see {self.log_path}") from None
        finally:
            listener.close()
        hello = self.chan.expect("hello", 30.0)
        if hello.get("version") != PROTOCOL_VERSION:
            raise ChannelError(f"controller process speaks protocol {hello.get('version')}, "
                               f"coordinator {PROTOCOL_VERSION}")
        self.chan.send({"op": "init", **self.init, "restart": self.starts > 0})
        try:
            self.ready = self.chan.expect("ready", self.ready_timeout_s)
        except ChannelError as e:
            raise ChannelError(f"{e}; see {self.log_path}") from None
        self.starts += 1
        return self.ready

    def tick(self, t: float, seq: int, timeout_s: float) -> dict:
        self.chan.send({"op": "tick", "t": t, "seq": seq})
        done = self.chan.expect("done", timeout_s)
        if done.get("seq") != seq:
            raise ChannelError(f"control channel: done for seq {done.get('seq')}, expected {seq}")
        return done

    def command(self, name: str, timeout_s: float = 30.0, **args) -> dict:
        self.chan.send({"op": "command", "name": name, **args})
        return self.chan.expect("ack", timeout_s)

    def stop(self, timeout_s: float = 60.0) -> dict:
        """Ask for a clean stop; returns the controller's final KPIs ('bye')."""
        if self.chan is None:
            return {}
        try:
            self.chan.send({"op": "stop"})
            bye = self.chan.expect("bye", timeout_s)
        finally:
            self.chan.close()
            self.chan = None
            self._wait(10.0)
        return bye

    def kill(self) -> None:
        """kill -9, as a crash would (controller-restart scenarios)."""
        if self.chan is not None:
            self.chan.close()
            self.chan = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self._wait(10.0)

    def _wait(self, timeout_s: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout_s)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def wait_port(host: str, port: int, timeout_s: float) -> bool:
    """True once something accepts TCP on host:port (bounded)."""
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False
