"""The TCL regulation experiment, wired into a twin run (scenario section `regulation:`).

Three windows of simulated time, driven by a controller cycle every `step_s`:
1. identify: the population runs on its thermostats; the controller-side identifier learns
   each device's thermal model and band from on/off + temperature telemetry (first half), and
   the state-bin Markov model's transitions (second half);
2. held-out: still uncontrolled; the bin model predicts aggregate power open loop from the
   state at the window's start and the virtual battery predicts the baseline from outdoor
   temperature; both are scored against the simulated population (RMS % of baseline);
3. regulation: the priority-stack tracker follows baseline*(1 + amplitude*r(t)), r a
   regulation-style signal; tracking error is sampled at every device step.

Two tracking KPIs, both in summary.json `tcl_tracking`: the top-level `rms_error_pct_of_baseline`
(and max) compares the population's power with the controller's own reference, i.e. against
its *modelled* baseline; `counterfactual` compares the delivered regulation (controlled minus
the same population run without the signal, stepped alongside in this process from the
regulation start with the same seed, weather and switching hash stream) with the requested one
(reference minus modelled baseline), normalised by the true uncontrolled mean. The samples
both are computed on are saved per device step (run folder `tcl_tracking.parquet`), and
`tracking_kpis` recomputes them from those columns.

The controller parts (controller.aggregation) see only telemetry arrays and write `force`
setpoints; this module is the in-process link between them and the twin's fleet arrays.
"""

from __future__ import annotations

import copy

import numpy as np

from controller.aggregation import BinModel, EtpIdentifier, PriorityStackTracker, VirtualBattery


def regulation_signal(n: int, step_s: float, tau_s: float, seed: int) -> np.ndarray:
    """Zero-mean, energy-neutral signal in [-1, 1] with correlation time tau_s (RegD-like)."""
    rng = np.random.default_rng(seed)
    phi = np.exp(-step_s / tau_s)
    x = np.empty(n)
    v = 0.0
    for k in range(n):
        v = phi * v + np.sqrt(1.0 - phi * phi) * rng.standard_normal()
        x[k] = v
    x -= x.mean()
    return x / max(np.max(np.abs(x)), 1e-12)


def _rms_pct(err, norm) -> float | None:
    err = np.asarray(err, float)
    return round(float(np.sqrt(np.mean(err**2)) / norm * 100.0), 4) if err.size and norm > 0 else None


def _max_pct(err, norm) -> float | None:
    err = np.asarray(err, float)
    return round(float(np.max(np.abs(err))) / norm * 100.0, 4) if err.size and norm > 0 else None


SAMPLE_COLUMNS = ("t_s", "p_kw", "ref_kw", "baseline_model_kw", "p_uncontrolled_kw")


def tracking_kpis(samples: dict) -> dict:
    """Tracking KPIs from the per-step samples (columns SAMPLE_COLUMNS, as saved in
    tcl_tracking.parquet): against the controller's modelled baseline (the reference it was
    given) and against the uncontrolled counterfactual."""
    p, ref, base, unc = (np.asarray(samples[k], float) for k in SAMPLE_COLUMNS[1:])
    base_mean = float(base.mean()) if base.size else 0.0
    out = {"baseline_kw": round(base_mean, 3),
           "rms_error_pct_of_baseline": _rms_pct(p - ref, base_mean),
           "max_abs_error_pct_of_baseline": _max_pct(p - ref, base_mean)}
    ok = np.isfinite(unc)
    if not ok.any():
        return out
    p, ref, base, unc = p[ok], ref[ok], base[ok], unc[ok]
    norm = float(unc.mean())
    delivered, requested = p - unc, ref - base
    corr = (float(np.corrcoef(delivered, requested)[0, 1])
            if delivered.size > 1 and delivered.std() > 0 and requested.std() > 0 else None)
    out["counterfactual"] = {
        "uncontrolled_mean_kw": round(norm, 3),
        "rms_error_pct_of_baseline": _rms_pct(delivered - requested, norm),
        "max_abs_error_pct_of_baseline": _max_pct(delivered - requested, norm),
        "delivered_requested_correlation": round(corr, 5) if corr is not None else None,
        "model_baseline_rms_pct": _rms_pct(base - unc, norm),
        "samples": int(ok.sum()),
    }
    return out


class TclTracking:
    def __init__(self, twin):
        self.spec = r = twin.scenario.regulation
        self.fleet = f = twin.fleets[r.group]
        self.step_s = r.step_s
        self.t_bins = r.identify_s / 2.0
        self.t_id = r.identify_s
        self.t_reg = r.identify_s + r.holdout_s
        self.t_end = self.t_reg + r.duration_s
        self.ident = EtpIdentifier(f.n)
        self.bin_model: BinModel | None = None
        self.vb: VirtualBattery | None = None
        self.tracker: PriorityStackTracker | None = None
        self.weather = twin.weather
        self.signal = regulation_signal(int(np.ceil(r.duration_s / r.step_s)) + 1, r.step_s,
                                        r.signal_tau_s, r.seed)
        self.hold_actual: list[float] = []
        self.hold_vb: list[float] = []
        self.hold_pred = np.zeros(0)
        self.calib = 1.0
        self.ref_now: float | None = None
        self.base_now = float("nan")
        self.samples: dict[str, list[float]] = {k: [] for k in SAMPLE_COLUMNS}
        self.shadow = None  # the same population without the signal (from the regulation start)
        self.energy_kwh: list[float] = []
        self.snap: dict = {}
        self.series = twin.kpi_extra.setdefault("_series", {})
        for k in ("tcl.ref_kw", "tcl.baseline_kw", "tcl.model_kw"):
            self.series[k] = float("nan")
        twin.add_periodic(r.step_s, self.cycle)
        twin.after_step.append(self.after_step)

    def _snapshot(self, key: str, t_s: float) -> None:
        f = self.fleet
        self.snap[key] = (t_s, float(f.comfort_dm.sum()), int(f.switches.sum()),
                          int(f.lockout_violations.sum()))

    # --- controller cycle -------------------------------------------------------------------
    def cycle(self, twin) -> None:
        t = twin.t_s
        f = self.fleet
        tel = f.telemetry()
        t_out = self.weather.t_out_c(t)
        p_meas = float(tel["p_kw"].sum())
        if t < self.t_id:
            self.ident.update(t, tel["t_in_c"], tel["on"], tel["p_kw"], t_out)
            if t >= self.t_bins:
                if self.bin_model is None:
                    e = self.ident.estimate(tel["t_set_c"])
                    self.bin_model = BinModel(e.lower_c, e.upper_c, e.mode, e.p_rated_kw, self.spec.bins)
                self.bin_model.update(tel["t_in_c"], tel["on"])
            return
        if self.vb is None:  # end of identification: freeze the models, predict the held-out window
            est = self.est = self.ident.estimate(tel["t_set_c"])
            self.vb = VirtualBattery.from_estimate(est, tel["t_set_c"])
            bm = self.bin_model
            n_on = int(np.asarray(tel["on"]).sum())
            if bm is not None and n_on:
                bm.p_on_kw = p_meas / n_on  # average running power, from telemetry
                steps = round(self.spec.holdout_s / self.step_s)
                self.hold_pred = bm.predict(bm.distribution(tel["t_in_c"], tel["on"]), steps)
            self.tracker = PriorityStackTracker(est.p_rated_kw, est.lower_c, est.upper_c, est.mode,
                                                est.a_per_s, est.b_c_per_s, self.spec.lockout_s)
            self.tracker.observe(t, tel["on"])
            self._snapshot("holdout_start", t)
            return
        if t <= self.t_reg + 1e-9 and "regulation_start" not in self.snap:
            self.tracker.observe(t, tel["on"])
            k = len(self.hold_actual)
            if t > self.t_id and self.spec.holdout_s > 0:
                self.hold_actual.append(p_meas)
                self.hold_vb.append(self.vb.baseline_kw(t_out))
                if k < self.hold_pred.size:
                    self.series["tcl.model_kw"] = float(self.hold_pred[k])
            if t < self.t_reg - 1e-9:
                return
        if "regulation_start" not in self.snap:  # start regulating
            self._snapshot("regulation_start", t)
            # the counterfactual: until now the population ran uncontrolled, so a copy taken
            # before the first command and stepped alongside is it without the signal
            self.shadow = copy.deepcopy(f)
            if self.hold_actual:
                self.calib = float(np.mean(self.hold_actual) / np.mean(self.hold_vb))
            self.series["tcl.model_kw"] = float("nan")
        if t >= self.t_end - 1e-9:
            if self.ref_now is not None:
                f.write("force", slice(None), 0)
                self.ref_now = None
                self._snapshot("regulation_end", t)
            self.tracker.observe(t, tel["on"])
            self.series["tcl.ref_kw"] = float("nan")
            return
        k = round((t - self.t_reg) / self.step_s)
        self.base_now = self.calib * self.vb.baseline_kw(t_out)
        ref = self.base_now * (1.0 + self.spec.amplitude_pct / 100.0 * self.signal[k])
        idx, val = self.tracker.dispatch(t, ref, p_meas, tel["t_in_c"], tel["on"], t_out,
                                         horizon_s=twin.dt_s)
        if idx.size:
            f.write("force", idx, val)
        self.ref_now = ref
        self.energy_kwh.append(self.vb.energy_kwh(tel["t_in_c"]))
        self.series["tcl.ref_kw"] = ref
        self.series["tcl.baseline_kw"] = self.base_now

    def after_step(self, twin) -> None:
        sh = self.shadow
        if sh is not None and twin.t_s < self.t_end - 1e-9:
            sh.step(twin.dt_s, twin.ambient)  # same step, same outdoor air as the fleet's
        if self.ref_now is not None:
            smp = self.samples
            smp["t_s"].append(twin.t_s)
            smp["p_kw"].append(float(self.fleet.p_kw.sum()))
            smp["ref_kw"].append(self.ref_now)
            smp["baseline_model_kw"].append(self.base_now)
            smp["p_uncontrolled_kw"].append(float(sh.p_kw.sum()) if sh is not None else float("nan"))

    # --- results ----------------------------------------------------------------------------
    def finish(self, twin) -> None:
        f = self.fleet
        if "regulation_end" not in self.snap and "regulation_start" in self.snap:
            self._snapshot("regulation_end", twin.t_s)
        out: dict = {"group": self.spec.group, "devices": f.n, "amplitude_pct": self.spec.amplitude_pct,
                     "step_s": self.step_s}
        kpis = tracking_kpis(self.samples)
        cf = kpis.pop("counterfactual", None)
        out.update(kpis)
        out["tracking_samples"] = len(self.samples["t_s"])
        twin.kpi_extra.setdefault("_tables", {})["tcl_tracking"] = {
            k: np.asarray(v, float) for k, v in self.samples.items()}
        if "regulation_start" in self.snap and "regulation_end" in self.snap:
            t0, dm0, sw0, lv0 = self.snap["regulation_start"]
            t1, dm1, sw1, lv1 = self.snap["regulation_end"]
            hours = max(t1 - t0, 1e-9) / 3600.0
            out["comfort_degree_minutes"] = round(dm1 - dm0, 4)
            out["switchings_per_device_per_hour"] = round((sw1 - sw0) / f.n / hours, 4)
            out["lockout_violations"] = lv1 - lv0
        if "holdout_start" in self.snap and "regulation_start" in self.snap:
            t0, _, sw0, _ = self.snap["holdout_start"]
            t1, _, sw1, _ = self.snap["regulation_start"]
            out["uncontrolled_switchings_per_device_per_hour"] = round((sw1 - sw0) / f.n / ((t1 - t0) / 3600), 4)
        out["lockout_violations_total"] = int(f.lockout_violations.sum())
        act = np.asarray(self.hold_actual)
        if act.size:
            norm = float(act.mean())
            m = min(act.size, self.hold_pred.size)
            out["model_rms_pct"] = _rms_pct(self.hold_pred[:m] - act[:m], norm) if m else None
            out["vb_baseline_rms_pct"] = _rms_pct(np.asarray(self.hold_vb) - act, norm)
            out["holdout_mean_kw"] = round(norm, 3)
        if self.vb is not None:
            vb = self.vb
            out["virtual_battery"] = {"p_max_kw": round(vb.p_max_kw, 2), "e_max_kwh": round(vb.e_max_kwh, 2),
                                      "alpha_per_h": round(vb.alpha_per_s * 3600, 5),
                                      "baseline_calibration": round(self.calib, 5)}
            if self.energy_kwh:
                e = np.asarray(self.energy_kwh)
                out["virtual_battery"]["energy_swing_pct_of_capacity"] = round(
                    float((e.max() - e.min()) / vb.e_max_kwh * 100), 3)
            est = self.est
            true_a = 1.0 / f.tau_s
            true_b = f.p_th_kw / (f.c_kwh_per_c * 3600.0)
            out["identification"] = {
                "devices_identified": int(est.identified.sum()),
                "a_median_abs_err_pct": round(float(np.median(np.abs(est.a_per_s / true_a - 1))) * 100, 4),
                "b_median_abs_err_pct": round(float(np.median(np.abs(est.b_c_per_s / true_b - 1))) * 100, 4),
                "band_width_median_abs_err_c": round(float(np.median(np.abs(
                    (est.upper_c - est.lower_c) - f.deadband_c))), 4),
            }
        if cf is not None:
            out["counterfactual"] = cf
        twin.kpi_extra["tcl_tracking"] = out
        twin.events.log(twin.t_s, "tcl_tracking", **{k: v for k, v in out.items()
                                                      if not isinstance(v, dict)})


def attach_tcl_tracking(twin) -> TclTracking:
    """Attach the regulation experiment of `twin.scenario.regulation`; call .finish(twin) after."""
    return TclTracking(twin)
