"""Collects the run's timeseries rows in memory (columnar) while the twin runs."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


class Recorder:
    """One row per output interval: feeder head, voltages, per-class aggregates, chosen devices."""

    def __init__(self, twin):
        self.twin = twin
        self.cols: dict[str, list] = defaultdict(list)
        self.devices = {g.name: min(g.record_devices, g.count) for g in twin.scenario.fleet}
        self.bus_names = [f"v_pu.bus{int(b)}" for b in twin.pf.bus_index]

    def sample(self) -> None:
        tw = self.twin
        c = self.cols
        res = tw.grid.result
        c["time"].append(tw.utc())
        c["t_s"].append(tw.t_s)
        c["price_eur_per_mwh"].append(tw.prices.at(tw.t_s))
        c["ghi_w_m2"].append(tw.ambient.ghi_w_m2)
        c["t_out_c"].append(tw.ambient.t_out_c)
        if res is not None and res.converged:
            c["head_p_kw"].append(res.p_head_kw)
            c["head_q_kvar"].append(res.q_head_kvar)
            c["losses_kw"].append(res.losses_kw)
            c["base_load_kw"].append(res.load_p_kw)
            c["feeder_sgen_kw"].append(res.sgen_p_kw)
            c["der_pf_kw"].append(res.der_p_kw)
            c["v_min_pu"].append(float(np.min(res.v_pu)))
            c["v_max_pu"].append(float(np.max(res.v_pu)))
            c["line_loading_max_pct"].append(float(np.max(res.line_loading_pct, initial=0.0)))
            c["trafo_loading_max_pct"].append(float(np.max(res.trafo_loading_pct, initial=0.0)))
            for name, v in zip(self.bus_names, res.v_pu):
                c[name].append(float(v))
        else:
            for k in ["head_p_kw", "head_q_kvar", "losses_kw", "base_load_kw", "feeder_sgen_kw",
                      "der_pf_kw", "v_min_pu", "v_max_pu", "line_loading_max_pct",
                      "trafo_loading_max_pct", *self.bus_names]:
                c[k].append(np.nan)
        c["violations"].append(len(tw.grid.violations))
        for name, f in tw.fleets.items():
            for k, v in f.aggregates().items():
                c[f"{name}.{k}"].append(v)
            nd = self.devices.get(name, 0)
            if nd:
                for k, arr in f.telemetry().items():
                    for i in range(nd):
                        c[f"{name}[{i}].{k}"].append(float(arr[i]))
        for k, v in tw.kpi_extra.get("_series", {}).items():
            c[k].append(v)

    def table(self):
        import pyarrow as pa

        n = len(self.cols["t_s"])
        data = {k: v for k, v in self.cols.items() if len(v) == n}
        return pa.table(data)
