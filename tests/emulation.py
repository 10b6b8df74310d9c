"""Emulation settings for tests that compare register values with the twin exactly: no
measurement noise and setpoints applied at once (the defaults model a field device: noise of
0.1 % of the reading and a 2 s open-loop response, issue 13 item 10)."""

from scenarios.model import Emulation

EXACT = {"noise_p_pct": 0, "noise_v_pct": 0, "noise_hz": 0, "p_response_s": 0, "q_response_s": 0}
EXACT_METER = Emulation(**EXACT)


def exact(fleet: list[dict]) -> list[dict]:
    """The fleet groups with exact emulation (their other emulation settings kept)."""
    return [g | {"emulation": g.get("emulation", {}) | EXACT} for g in fleet]


def started_rig(scenario):
    """Twin + started EmulatorHost (no RTU, exact head meter) stepped to t = 60 s, for a module
    fixture: yields (twin, host, {device_id: endpoint row}) and stops the host after."""
    from device_emulators import EmulatorHost
    from twin.simulation import Twin

    twin = Twin(scenario)
    host = EmulatorHost(twin, rtu=False, meter_emulation=EXACT_METER)
    try:
        eps = {e["device_id"]: e for e in host.start()}
        host.step(60)
        yield twin, host, eps
    finally:
        host.stop()
