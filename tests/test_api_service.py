"""The controller service over real sockets (issue 17): a second instance on the same state
directory is refused at start with one line (and one started without tokens says so); a
0644 tokens file and a plain-HTTP non-loopback API are refused; historian files are 0600; and
the emergency shed reaches the devices while heavy history readers are still paging."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from controller.config import ConfigError, load_config
from controller.historian import Historian
from controller.service import serve
from controller_devices import DeviceServers, SunSpecBattery
from ports import free_port

ROOT = Path(__file__).resolve().parent.parent
OP, VW = {"Authorization": "Bearer op-secret"}, {"Authorization": "Bearer vw-secret"}
ENV = dict(os.environ, GRIDTWIN_API_TOKENS="op-secret:olga:operator,vw-secret:vic:viewer")
CMD = [sys.executable, "-m", "gridtwin_cli", "controller", "serve", "--config"]


def _config(tmp_path, ports, api_port, extra=None, **api):
    cfg = tmp_path / "controller.yaml"
    cfg.write_text(yaml.safe_dump({**(extra or {}),
        "name": "g17", "cycle_s": 0.25,
        "devices": [{"group": "bat", "kind": "battery", "ports": ports, "poll_s": 0.2}],
        "link": {"timeout_s": 0.3},
        "historian": {"path": str(tmp_path / "state" / "historian.sqlite"), "synchronous": "NORMAL",
                      "telemetry_every_s": 0},
        "api": {"port": api_port, "history_page_rows": 2000, **api}}))
    return cfg


def _refused(cfg, env=ENV, timeout_s=120):
    r = subprocess.run(CMD + [str(cfg)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout_s)
    return r.returncode, r.stderr


def _up(base, p, timeout_s=60.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        assert p.poll() is None, f"controller exited with {p.returncode}"
        try:
            if httpx.get(f"{base}/api/whoami", headers=OP, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("controller API did not come up")


def test_insecure_secrets_and_exposure_refused(tmp_path):
    """Refused before anything starts (the service's own checks, in-process: fast)."""
    tok = tmp_path / "tokens.yaml"
    tok.write_text("abc: {user: ann, role: operator}\n")
    os.chmod(tok, 0o644)
    for api, needle in (({"tokens_file": str(tok)}, "chmod 600"),
                        ({"host": "0.0.0.0"}, "api.host: 0.0.0.0 is not loopback"),
                        ({"host": "10.1.2.3", "tls_cert_file": "c.pem"}, "go together")):
        with pytest.raises(ConfigError, match=needle) as e:
            serve(load_config(_config(tmp_path, [1502], free_port(), **api)))
        assert "\n" not in str(e.value)
    (tmp_path / "ven.crt").write_text("cert")
    (tmp_path / "ven.key").write_text("key")
    os.chmod(tmp_path / "ven.key", 0o640)
    oa = {"openadr": {"vtn_url": "http://127.0.0.1:1/OpenADR2/Simple/2.0b", "cert_file": "ven.crt",
                      "key_file": "ven.key"}}
    with pytest.raises(ConfigError, match="openadr.key_file: .*chmod 600"):
        serve(load_config(_config(tmp_path, [1502], free_port(), extra=oa)))
    assert not (tmp_path / "state").exists()  # nothing half-started


def test_historian_files_are_private(tmp_path):
    h = Historian(tmp_path / "s" / "h.sqlite", "NORMAL")
    h.log_event(0.0, "x")
    assert h.query("events")  # a reader connection too
    for f in ("h.sqlite", "h.sqlite-wal", "h.sqlite-shm"):
        assert (tmp_path / "s" / f).stat().st_mode & 0o777 == 0o600, f
    h.close()


def _prefill(path: Path, n_rows: int) -> None:
    h = Historian(path, "NORMAL")
    h._tx(lambda db: db.executemany("INSERT INTO telemetry VALUES (?,?,?,?,?,?)",
                                    ((0, float(i), f"old/{i % 50}", "p_kw", 1.0, "good")
                                     for i in range(n_rows))))
    h.close()


def test_second_instance_refused_and_shed_preempts_heavy_reads(tmp_path):
    srv = DeviceServers([SunSpecBattery() for _ in range(2)])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = _config(tmp_path, srv.ports, port)
    _prefill(tmp_path / "state" / "historian.sqlite", 40_000)
    log = open(tmp_path / "a.log", "wb")
    p = subprocess.Popen(CMD + [str(cfg)], cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        _up(base, p)
        # a second service on the same state directory, started without tokens: refused, one line
        cfg2 = _config(tmp_path, srv.ports, free_port())
        env = {k: v for k, v in ENV.items() if k != "GRIDTWIN_API_TOKENS"}
        rc, err = _refused(cfg2, env)
        lines = err.strip().splitlines()
        assert rc == 2 and "state directory is in use by another controller" in lines[-1], err
        assert f"pid {p.pid}" in lines[-1]
        assert any("no API tokens configured" in ln for ln in lines), err
        assert p.poll() is None  # the first one is untouched

        # 6 viewers page through 40k telemetry rows (20 pages of 2000 each) ...
        pages = {"done": 0}
        lock = threading.Lock()

        def reader():
            with httpx.Client(base_url=base, headers=VW, timeout=120) as c:
                before = ""
                for _ in range(20):
                    r = c.get(f"/api/history/telemetry?limit=100000{before}")
                    assert r.status_code == 200 and len(r.json()) <= 2000
                    with lock:
                        pages["done"] += 1
                    before = f"&before={r.headers['X-Next-Before']}"

        readers = [threading.Thread(target=reader, daemon=True) for _ in range(6)]
        for t in readers:
            t.start()
        end = time.monotonic() + 120
        while pages["done"] < 6 and time.monotonic() < end:  # ... and are well under way
            time.sleep(0.01)
        assert pages["done"] >= 6, "history readers did not get going"
        # ... when the operator sheds: it reaches the batteries before the readers are done
        r = httpx.post(f"{base}/api/emergency/shed", headers=OP, json={"reason": "test"}, timeout=60)
        assert r.status_code == 200
        # the shed ran a cycle at once: the batteries hold it when the POST answers
        assert "cycle" in r.json() and all(d.setpoint_kw() <= -9.9 for d in srv.devices)
        end = time.monotonic() + 60
        while not all(d.setpoint_kw() <= -9.9 for d in srv.devices) and time.monotonic() < end:
            time.sleep(0.01)
        with lock:
            at_shed = pages["done"]
        assert all(d.setpoint_kw() <= -9.9 for d in srv.devices)
        for t in readers:
            t.join(120)
        assert pages["done"] == 120
        assert at_shed < 90, at_shed  # shed landed with at least a quarter of the pages to go
    finally:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()
        srv.close()


def test_exposure_options():
    from controller.api.serving import ExposureError, uvicorn_options
    from controller.api_settings import ApiSettings

    def resolve(p):
        return Path(p)

    assert uvicorn_options(ApiSettings(), resolve) == {"host": "127.0.0.1", "port": 8080}
    assert uvicorn_options(ApiSettings(host="::1"), resolve)["host"] == "::1"
    assert uvicorn_options(ApiSettings(host="10.0.0.5", allow_plaintext_remote=True), resolve)["host"] == "10.0.0.5"
    with pytest.raises(ExposureError, match="not loopback"):
        uvicorn_options(ApiSettings(host="vpp.example.net"), resolve)


def test_tls_options_need_a_private_key(tmp_path):
    from controller.api.serving import ExposureError, uvicorn_options
    from controller.api_settings import ApiSettings

    (tmp_path / "api.crt").write_text("cert")
    key = tmp_path / "api.key"
    key.write_text("key")
    os.chmod(key, 0o644)
    st = ApiSettings(host="0.0.0.0", tls_cert_file=str(tmp_path / "api.crt"), tls_key_file=str(key))
    with pytest.raises(ExposureError, match="tls_key_file: .*chmod 600"):
        uvicorn_options(st, Path)
    os.chmod(key, 0o600)
    assert uvicorn_options(st, Path) == {"host": "0.0.0.0", "port": 8080, "ssl_certfile": str(tmp_path / "api.crt"),
                                         "ssl_keyfile": str(key)}
