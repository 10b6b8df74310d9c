"""Added latency of a secure setpoint write (signed envelope via the lab command gateway) over a
plain ModbusLink write to the same device, both measured in the same run.

A lab device process (hil.lab_device: pymodbus SunSpec emulator on 127.0.0.2, real-time twin)
and a command gateway process (python -m hil.command_gateway) in front of it, keys generated
into a temporary folder (mode 600). Baseline: ModbusLink.write (register write + read-back).
Secure: SecureCommandLink.write, which adds envelope sealing (Ed25519 sign, AES-GCM), a TCP
round trip to the gateway, verification, the same Modbus write + read-back done by the
gateway, a fresh telemetry poll for the acknowledged read-back and the signed ack check.

Run: .venv/bin/python benchmarks/secure_channel.py [--n 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np
from ports import free_port

from controller.clock import WallClock
from controller.links.modbus import ModbusLink
from controller.links.secure import SecureCommandLink
from controller.security.keys import generate_private_key, public_bytes, write_secret_file

LAB = (ROOT / "scenarios/hil/lab_bench_pv.yaml").read_text()  # the lab bench twin
DEV = "lab_pv/0"


def timed_writes(link, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        v = 30.0 + (i % 50)
        t0 = time.perf_counter()
        ok = link.write(DEV, "p_limit_pct", v)
        out[i] = time.perf_counter() - t0
        if not ok:
            raise SystemExit(f"write {i} failed: {getattr(link, 'last_error', '')}")
    return out * 1e3


def crypto_ms(ctl, gw, n: int = 300) -> np.ndarray:
    """One write's cryptography without the network: seal, verify+decrypt, sign ack, check ack."""
    from controller.security.channel import open_ack, request_id, seal_ack
    from controller.security.envelope import Signer, Verifier

    key = os.urandom(32)
    signer, verifier = Signer("controller", ctl, key), Verifier({"controller": ctl.public_key()}, 30.0, key)
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        wire = signer.seal({"device_id": DEV, "setpoint": "p_limit_pct", "value": 40.0})
        verifier.open(wire)
        open_ack(seal_ack(gw, "gateway", request_id(wire), {"accepted": True, "readback": {"p_kw": -250.0}}, key),
                 gw.public_key(), key)
        out[i] = time.perf_counter() - t0
    return out * 1e3


def poll_ms(row, n: int = 100) -> np.ndarray:
    link = ModbusLink([row], WallClock(), timeout_s=1.0, poll_s=1e-6, stale_factor=1e9)
    link.read()
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        link.read()
        out[i] = time.perf_counter() - t0
    link.close()
    return out * 1e3


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "lab.yaml").write_text(LAB)
        dev_port, gw_port = free_port("127.0.0.2"), free_port("127.0.0.2")
        try:
            procs.append(subprocess.Popen([sys.executable, "-m", "hil.lab_device", str(d / "lab.yaml"), "--group",
                                           "lab_pv", "--host", "127.0.0.2", "--port", str(dev_port)], cwd=ROOT,
                                          stdout=subprocess.PIPE, text=True))
            assert procs[-1].stdout.readline().startswith("READY")
            ctl = generate_private_key(d / "controller.pem")
            gw = generate_private_key(d / "gateway.pem")
            write_secret_file(d / "trust.json", json.dumps({"controller": public_bytes(ctl).hex()}).encode())
            procs.append(subprocess.Popen([sys.executable, "-m", "hil.command_gateway", "--listen",
                                           f"127.0.0.2:{gw_port}", "--device", f"{DEV}=127.0.0.2:{dev_port}:1:pv",
                                           "--key", str(d / "gateway.pem"), "--trust", str(d / "trust.json")],
                                          cwd=ROOT, stdout=subprocess.PIPE, text=True))
            assert procs[-1].stdout.readline().startswith("READY")
            row = {"device_id": DEV, "group": "lab_pv", "kind": "pv", "host": "127.0.0.2", "port": dev_port, "unit": 1}
            plain = ModbusLink([row], WallClock(), timeout_s=1.0)
            plain.devices()
            links = {"plain ModbusLink": plain,
                     "secure, signed+encrypted": SecureCommandLink(
                         ModbusLink([row], WallClock()), f"127.0.0.2:{gw_port}", ctl, gw.public_key()),
                     "secure, signed only": SecureCommandLink(
                         ModbusLink([row], WallClock()), f"127.0.0.2:{gw_port}", ctl, gw.public_key(),
                         encrypt=False)}
            for link in links.values():
                timed_writes(link, 20)  # connect, discovery, session hello
            rounds = max(args.n // 50, 1)  # interleaved, so load drift on a shared machine hits all alike
            results = {name: timed_writes(link, args.n // rounds)
                       for name, link in links.items()}
            for _ in range(rounds - 1):
                for name, link in links.items():
                    results[name] = np.concatenate([results[name], timed_writes(link, args.n // rounds)])
            parts = {"crypto only (seal, verify, ack)": crypto_ms(ctl, gw),
                     "gateway's read-back poll": poll_ms(row)}
            base = float(np.median(results["plain ModbusLink"]))
            print(f"secure command channel: {len(results['plain ModbusLink'])} p_limit_pct writes each, loopback, "
                  f"{os.cpu_count()} cores (shared machine)")
            for name, ms in results.items():
                med = float(np.median(ms))
                print(f"  {name:26s} median {med:7.3f} ms  p95 {np.percentile(ms, 95):7.3f} ms  "
                      f"ratio vs plain {med / base:5.2f}x  added {med - base:+7.3f} ms")
            print("  where the added time goes (medians):")
            for name, ms in parts.items():
                print(f"    {name:32s} {float(np.median(ms)):7.3f} ms")
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
