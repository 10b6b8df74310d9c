"""Emulation settings for tests that compare register values with the twin exactly: no
measurement noise and setpoints applied at once (the defaults model a field device: noise of
0.1 % of the reading and a 2 s open-loop response, issue 13 item 10)."""

from scenarios.model import Emulation

EXACT = {"noise_p_pct": 0, "noise_v_pct": 0, "noise_hz": 0, "p_response_s": 0, "q_response_s": 0}
EXACT_METER = Emulation(**EXACT)


def exact(fleet: list[dict]) -> list[dict]:
    """The fleet groups with exact emulation (their other emulation settings kept)."""
    return [g | {"emulation": g.get("emulation", {}) | EXACT} for g in fleet]
