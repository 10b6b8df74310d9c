"""N-1 contingency screening: each feeder-head transformer and main line out in turn.

For every outage the AC power flow is re-run on a copy of the net and the result is reduced to
what an operator needs: did it converge, how many buses lost supply (islanded), min/max
voltage, worst line/transformer loading and the limit violations (`grid_models.limits`).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandapower as pp

from grid_models.limits import Violation, check_limits


@dataclass
class Case:
    element: str  # "none" (base case) | "line" | "trafo"
    index: int
    converged: bool
    islanded_buses: int = 0  # in-service buses without supply after the outage
    v_min_pu: float = float("nan")
    v_max_pu: float = float("nan")
    max_line_loading_pct: float = float("nan")
    max_trafo_loading_pct: float = float("nan")
    violations: list[Violation] = field(default_factory=list)

    @property
    def secure(self) -> bool:
        return self.converged and not self.violations and self.islanded_buses == 0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["violations"] = [v.as_dict() for v in self.violations]
        d["secure"] = self.secure
        return d


@dataclass
class ContingencyReport:
    base: Case
    cases: list[Case]

    @property
    def insecure(self) -> list[Case]:
        return [c for c in self.cases if not c.secure]

    def worst_loading(self) -> Case | None:
        ok = [c for c in self.cases if c.converged]
        return max(ok, key=lambda c: np.nanmax([c.max_line_loading_pct, c.max_trafo_loading_pct, 0.0]),
                   default=None)

    def as_dict(self) -> dict:
        return {"base": self.base.as_dict(), "cases": [c.as_dict() for c in self.cases],
                "insecure": len(self.insecure)}


def head_trafos(net: pp.pandapowerNet) -> list[int]:
    """Transformers whose HV side is an ext_grid bus (or fused to one by a bus-bus switch)."""
    heads = {int(b) for b in net.ext_grid.bus}
    sw = net.switch[(net.switch.et == "b") & net.switch.closed]
    for a, b in zip(sw.bus.astype(int), sw.element.astype(int)):
        if a in heads or b in heads:
            heads |= {a, b}
    return [int(i) for i in net.trafo.index[net.trafo.hv_bus.isin(heads) & net.trafo.in_service]]


def main_lines(net: pp.pandapowerNet, n: int = 10) -> list[int]:
    """The n in-service lines carrying the most power in the current operating point."""
    if not len(net.line):
        return []
    if "res_line" not in net or len(net.res_line) != len(net.line) or net.res_line.p_from_mw.isna().all():
        _runpp(net)
    flow = net.res_line.p_from_mw.abs().where(net.line.in_service, -1.0)
    return [int(i) for i in flow.sort_values(ascending=False).index[:n] if flow[i] >= 0]


def _runpp(net) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pp.runpp(net)
            return True
        except pp.LoadflowNotConverged:
            return False


def _case(net, element, index, limits) -> Case:
    ok = _runpp(net)
    if not ok:
        return Case(element, index, False)
    vm = net.res_bus.vm_pu.to_numpy()
    live = net.bus.in_service.to_numpy()
    islanded = int(np.sum(live & ~np.isfinite(vm)))
    ll = net.res_line.loading_percent.to_numpy() if len(net.line) else np.zeros(0)
    tl = net.res_trafo.loading_percent.to_numpy() if len(net.trafo) else np.zeros(0)
    viol = check_limits(np.nan_to_num(vm, nan=1.0), net.bus.index.to_numpy(), np.nan_to_num(ll),
                        net.line.index.to_numpy(), np.nan_to_num(tl), net.trafo.index.to_numpy(), limits)

    def mx(a):
        return float(np.nanmax(a)) if np.isfinite(a).any() else float("nan")

    return Case(element, index, True, islanded, float(np.nanmin(vm)), mx(vm), mx(ll), mx(tl), viol)


def screen_n1(net: pp.pandapowerNet, limits, lines=None, trafos=None, n_lines: int = 10) -> ContingencyReport:
    """Base case plus one case per outage. Defaults: the feeder-head transformers and the
    `n_lines` most loaded lines. The caller's net is not modified."""
    net = copy.deepcopy(net)
    base = _case(net, "none", -1, limits)
    trafos = head_trafos(net) if trafos is None else list(trafos)
    lines = main_lines(net, n_lines) if lines is None else list(lines)
    cases = []
    for element, idx in [("trafo", t) for t in trafos] + [("line", ln) for ln in lines]:
        tab = net[element]
        if not tab.at[idx, "in_service"]:
            continue
        tab.at[idx, "in_service"] = False
        try:
            cases.append(_case(net, element, int(idx), limits))
        finally:
            tab.at[idx, "in_service"] = True
    return ContingencyReport(base, cases)
