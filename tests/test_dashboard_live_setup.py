"""`gridtwin hil init`: the controller config it writes loads, names every port the emulator of
the same scenario really serves (device by device, with the twin's buses), and its tokens
file is 0600 with an operator and a viewer the controller accepts."""

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "controller" / "examples" / "field_twin.yaml"


def _free_base(n: int = 24) -> int:
    """A run of n free loopback ports (checked by binding them all)."""
    for base in range(23000, 60000, 97):
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def test_init_writes_config_matching_the_running_emulator(tmp_path):
    from controller.config import load_config, load_tokens
    from device_emulators.host import EmulatorHost
    from scenarios.load import load_scenario
    from twin.simulation import Twin

    base = _free_base()
    r = subprocess.run([sys.executable, str(ROOT / "gridtwin_cli.py"), "hil", "init", str(SCENARIO),
                        "--port-base", str(base), "--out", str(tmp_path / "live"), "--api-port", "18080"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "gridtwin controller serve --config" in r.stdout and "sign in as 'operator'" in r.stdout
    cfg_path, tok_path = tmp_path / "live" / "controller.yaml", tmp_path / "live" / "tokens.yaml"
    assert stat.S_IMODE(os.stat(tok_path).st_mode) == 0o600
    cfg = load_config(cfg_path)
    store = load_tokens(cfg)
    assert sorted(store.users()) == [("operator", "operator"), ("viewer", "viewer")]
    assert cfg.api.port == 18080 and Path(cfg.resolve(cfg.historian.path)).parent == cfg_path.parent
    rows = {row["device_id"]: row for g in cfg.devices for row in g.rows()}
    # the emulator of the same scenario, really started on that port base
    twin = Twin(load_scenario(SCENARIO))
    host = EmulatorHost(twin, port_base=base)
    host.start()
    try:
        served = {e.device_id: e for e in host.endpoints}
        assert served["rtu"].port == cfg.iec104[0].port
        meter = served.pop("meter/head")
        assert rows.pop("meter/0")["port"] == meter.port
        served.pop("rtu")
        assert set(served) == set(rows)
        for dev, e in served.items():
            g, i = dev.split("/")
            assert rows[dev]["port"] == e.port and rows[dev]["kind"] == e.kind
            assert rows[dev]["bus"] == int(twin.fleets[g].bus[int(i)])
        with socket.create_connection(("127.0.0.1", rows["bat/2"]["port"]), timeout=5):
            pass  # the port the config names answers
    finally:
        host.stop()
    again = subprocess.run([sys.executable, str(ROOT / "gridtwin_cli.py"), "hil", "init", str(SCENARIO),
                            "--port-base", str(base), "--out", str(tmp_path / "live")],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists (give --force" in again.stderr


def test_cli_without_arguments_prints_help_and_schema_works_from_any_folder(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "gridtwin_cli.py")], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and "usage: gridtwin" in r.stdout and "hil" in r.stdout and not r.stderr
    out = tmp_path / "schema.json"
    r = subprocess.run([sys.executable, str(ROOT / "gridtwin_cli.py"), "schema", "--out", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and out.stat().st_size > 1000, r.stderr
    h = subprocess.run([sys.executable, str(ROOT / "gridtwin_cli.py"), "hil", "run", "--help"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path).stdout
    assert "suite YAML file" in h and "(default: runs/hil)" in h and "(default: failed)" in h
