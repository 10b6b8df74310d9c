"""The unmanaged load the safety gate must assume at each bus.

Load allocation from head metering: the feeder model's nominal loads (and generators, as
negative load) scaled by one factor so that, together with the managed devices' metered
power, they explain the power measured at the feeder head. Without a head meter the
nominal values are used unscaled. A state estimate (grid_models.estimation) can replace
this where the feeder has enough measurements.
"""

from __future__ import annotations

import numpy as np

from controller.safety.state import GridSnapshot


class HeadMeterLoadAllocation:
    def __init__(self, net, max_scale: float = 3.0):
        loads = net.load[net.load.in_service]
        gens = net.sgen[net.sgen.in_service]
        self.bus = np.concatenate([loads.bus.to_numpy(), gens.bus.to_numpy()]).astype(np.int64)
        self.p_kw = np.concatenate([loads.p_mw.to_numpy(), -gens.p_mw.to_numpy()]) * 1000.0
        self.q_kvar = np.concatenate([loads.q_mvar.to_numpy(), -gens.q_mvar.to_numpy()]) * 1000.0
        self.nominal_kw = float(loads.p_mw.sum() * 1000.0)
        self.max_scale = max_scale
        self.last_scale = 1.0

    def scale(self, state) -> float:
        meters = [g for g in state.groups.values() if g.kind == "meter"]
        if not meters or self.nominal_kw <= 0:
            return 1.0
        head = np.nansum(meters[0].get("p_kw"))
        if not np.isfinite(head) or not meters[0].usable().any():
            return self.last_scale  # meter lost: keep the last allocation
        der = sum(float(np.nansum(g.get("p_kw"))) for g in state.groups.values()
                  if g.kind not in ("meter", "rtu") and "p_kw" in g.values)
        gen_kw = -float(self.p_kw[self.p_kw < 0].sum())
        self.last_scale = float(np.clip((head - der + gen_kw) / self.nominal_kw, 0.0, self.max_scale))
        return self.last_scale

    def snapshot(self, state, now_s: float) -> GridSnapshot:
        k = self.scale(state)
        p = np.where(self.p_kw > 0, self.p_kw * k, self.p_kw)
        q = np.where(self.p_kw > 0, self.q_kvar * k, self.q_kvar)
        return GridSnapshot.from_fleet_state(state, self.bus, p, q, now_s=now_s)


def make_gate(net, limits, clock, config=None):
    """(SafetyGate, snapshot_fn) for a controller: the gate on the feeder model and the
    function turning the controller's FleetState into the gate's GridSnapshot."""
    from controller.safety.gate import SafetyGate

    alloc = HeadMeterLoadAllocation(net)
    gate = SafetyGate(net, limits, config)
    return gate, lambda state: alloc.snapshot(state, clock.now())
