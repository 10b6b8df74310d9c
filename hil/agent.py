"""The controller process under HIL: `python -m hil.agent --connect 127.0.0.1:PORT`.

It builds the real controller (controller/core.py) with real protocol links to the endpoint
table it is given, on a SteppedClock (lockstep: one cycle per `tick`) or a ScenarioWallClock
(real time: it cycles on its own), records every link message when asked, and answers the
coordinator over the control channel (hil/README.md).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import traceback

from hil.protocol import PROTOCOL_VERSION, ChannelError, connect


class TimingLink:
    """Adds up wall time spent inside a link's calls (the protocol share of a cycle)."""

    def __init__(self, inner):
        self.inner = inner
        self.io_s = 0.0
        self.reads = 0
        self.writes = 0

    def _timed(self, fn, *a):
        t0 = time.perf_counter()
        try:
            return fn(*a)
        finally:
            self.io_s += time.perf_counter() - t0

    def devices(self):
        return self.inner.devices()

    def read(self):
        self.reads += 1
        return self._timed(self.inner.read)

    @property
    def read_groups(self):
        fn = self.inner.read_groups

        def read_groups():
            self.reads += 1
            return self._timed(fn)

        return read_groups

    def write(self, device_id, setpoint, value):
        self.writes += 1
        return self._timed(self.inner.write, device_id, setpoint, value)

    def status(self):
        return self.inner.status()

    def close(self):
        self.inner.close()

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="hil.agent")
    ap.add_argument("--connect", required=True, help="coordinator control channel host:port")
    args = ap.parse_args(argv)
    host, _, port = args.connect.rpartition(":")
    if not host.startswith("127."):
        print(f"hil.agent: --connect must be a loopback address, got {host!r}", file=sys.stderr)
        return 2
    import logging

    # controller.log (the coordinator sends our stdout there): the controller's own INFO lines
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pandapower").setLevel(logging.WARNING)  # import-time notices, not the controller's
    log = logging.getLogger("hil.agent")
    chan = connect(host, int(port))
    chan.send({"op": "hello", "version": PROTOCOL_VERSION, "pid": __import__("os").getpid()})
    rt = None
    try:
        init = chan.expect("init", 60.0)
        from hil.controller_adapter import build_controller

        rt = build_controller(init)
        chan.on_message = rt.record_channel
        chan.send({"op": "ready", "devices": rt.device_count(), "links": rt.link_names(),
                   "restored": rt.restored()})
        log.info("controller ready (%s mode): %d devices over %s; state restored: %s", init["mode"],
                 rt.device_count(), ", ".join(rt.link_names()), rt.restored())
        if init["mode"] == "realtime":
            return _serve_realtime(chan, rt)
        return _serve_lockstep(chan, rt)
    except ChannelError as e:
        print(f"hil.agent: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        traceback.print_exc()
        try:
            chan.send({"op": "error", "message": f"{type(e).__name__}: {e}"})
        except ChannelError:
            pass
        return 1
    finally:
        if rt is not None:
            rt.close()
            log.info("controller stopped")
        chan.close()


def _handle_common(chan, rt, msg) -> bool:
    """command/stop; False when the loop should end."""
    if msg["op"] == "command":
        result = rt.command(msg["name"], msg.get("reason", ""))
        chan.send({"op": "ack", "name": msg["name"], "result": result})
        return True
    if msg["op"] == "stop":
        chan.send({"op": "bye", "kpis": rt.kpis()})
        return False
    chan.send({"op": "error", "message": f"unexpected op {msg['op']!r}"})
    return False


def _serve_lockstep(chan, rt) -> int:
    while True:
        msg = chan.recv(24 * 3600.0)  # the coordinator may pause (debugger); it owns the timeout
        if msg["op"] == "tick":
            stats = rt.cycle_at(float(msg["t"]))
            chan.send({"op": "done", "t": msg["t"], "seq": msg["seq"], **stats})
        elif not _handle_common(chan, rt, msg):
            return 0


def _serve_realtime(chan, rt) -> int:
    go = chan.expect("go", 120.0)
    rt.start_wall_clock(float(go["wall0"]))
    stop = threading.Event()
    errors: list[str] = []

    def loop():
        try:
            rt.run_realtime(stop)
        except Exception as e:  # reported at stop; the coordinator's run goes on
            errors.append(f"{type(e).__name__}: {e}")
            traceback.print_exc()

    th = threading.Thread(target=loop, name="controller-cycle", daemon=True)
    th.start()
    while True:
        msg = chan.recv(24 * 3600.0)
        if msg["op"] == "stop":
            stop.set()
            th.join(timeout=60.0)
            kpis = rt.kpis()
            if errors:
                kpis.setdefault("controller", {})["error"] = errors[0]
            chan.send({"op": "bye", "kpis": kpis})
            return 0
        if not _handle_common(chan, rt, msg):
            return 0


if __name__ == "__main__":
    sys.exit(main())
