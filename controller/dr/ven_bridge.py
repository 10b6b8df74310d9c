"""The OpenADR VEN wired into a running Controller (what `gridtwin controller serve` starts
when its config has an `openadr:` section).

The VEN (controller/dr/openadr_ven.py) creates and changes the Controller's own DR events
through its DR method set (`add_dr_event` with source "openadr", `modify_dr_event`,
`cancel_dr_event`, `set_opt`), which the cycle dispatches; an event the controller refuses
raises the alarm `openadr_event_refused`. The opt decision
uses the controller's reduction margin (`Controller.margin()`) less what overlapping opted-in
events already claim. A supervisor thread registers (retrying), polls on `poll_s`, and raises
the alarm `openadr_down` while registration fails or the VTN stays silent for `down_after_s`;
nothing here ever stops the cycle.
"""

from __future__ import annotations

import logging
import threading
import time

from controller.dr.openadr_ven import DrError, OpenAdrVen, VenError

log = logging.getLogger("controller.openadr")

ALARM = "openadr_down"
REFUSED = "openadr_event_refused"


class VenBridge:
    def __init__(self, ctl, vtn_url: str, ven_name: str = "gridtwin-vpp", ven_id: str | None = None,
                 poll_s: float = 10.0, retry_s: float = 5.0, down_after_s: float = 30.0,
                 start_timeout_s: float = 10.0, contracted_kw: float = 100.0,
                 report_sampling_s: float = 10.0, client_options: dict | None = None):
        self.ctl = ctl
        self.vtn_url, self.ven_name, self.ven_id = vtn_url, ven_name, ven_id
        self.poll_s, self.retry_s, self.down_after_s = poll_s, retry_s, down_after_s
        self.start_timeout_s = start_timeout_s
        self.contracted_kw, self.report_sampling_s = contracted_kw, report_sampling_s
        self.client_options = client_options or {}
        self.ven: OpenAdrVen | None = None
        self.decisions: list[dict] = []  # (event, requested, room, opt): what was answered and why
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._down = False

    # --- opt decision --------------------------------------------------------------------------
    def decide(self, specs: list[dict], event: dict) -> str:
        """optIn when every interval fits the margin left beside overlapping opted-in events
        and names only known groups; else optOut."""
        ctl = self.ctl
        with ctl.lock:
            margin = float(ctl.margin()["margin_kw"])
            known = set(ctl.state.groups)
            opt = "optIn"
            why = "fits the margin"
            prev = [ctl.dr.get(s["id"]) for s in specs]
            if specs and all(_same(p, s) for p, s in zip(prev, specs)):
                # the VTN repeats an event already answered (re-delivery, our restart): keep it
                opt = "optIn" if all(p.opt == "in" for p in prev) else "optOut"
                why, specs = "unchanged event: answer kept", []
            for s in specs:
                other = sum(e.reduction_kw for e in ctl.dr.values()
                            if e.id != s["id"] and e.opt == "in" and e.status in ("pending", "active")
                            and e.start_t < s["end_t"] and s["start_t"] < e.end_t)
                room = margin - other
                unknown = [g for g in s["groups"] or [] if g not in known]
                if unknown:
                    opt, why = "optOut", f"unknown group {unknown[0]!r}"
                elif s["reduction_kw"] > room + 1e-9:
                    opt, why = "optOut", f"{s['reduction_kw']:g} kW exceeds the margin left {room:.1f} kW"
                self.decisions.append({"id": s["id"], "requested_kw": s["reduction_kw"],
                                       "margin_kw": round(margin, 3), "room_kw": round(room, 3),
                                       "opt": opt, "why": why})
        ctl.hist.log_event(ctl.clock.now(), "openadr_opt",
                           event_id=event["event_descriptor"]["event_id"], opt=opt, reason=why,
                           margin_kw=round(margin, 3))
        return opt

    def refused(self, event_id: str, err: Exception) -> None:
        """An event the controller would not take (unknown group, bad window): alarm."""
        self.ctl.hist.raise_alarm(self.ctl.clock.now(), REFUSED, None, f"{event_id}: {err}"[:300])

    def make_ven(self) -> OpenAdrVen:
        """The VEN on this controller with the bridge's opt policy, telemetry and alarms."""
        return OpenAdrVen(self.ctl, self.vtn_url, ven_name=self.ven_name, ven_id=self.ven_id,
                          contracted_kw=self.contracted_kw, decide=self.decide,
                          telemetry_kw=self.delivered_kw, report_sampling_s=self.report_sampling_s,
                          client_options=self.client_options, on_refused=self.refused)

    def delivered_kw(self) -> float:
        """Last metered delivery of the active OpenADR events (the VEN's telemetry report)."""
        with self.ctl.lock:
            return float(sum(e.samples[-1] for e in self.ctl.dr.values()
                             if e.source == "openadr" and e.status == "active" and e.samples))

    # --- supervisor ----------------------------------------------------------------------------
    def start(self) -> VenBridge:
        self._thread = threading.Thread(target=self._supervise, name="openadr-supervisor", daemon=True)
        self._thread.start()
        return self

    def _alarm(self, msg: str) -> None:
        if not self._down:
            log.warning("openadr: %s", msg)
        self._down = True
        self.ctl.hist.raise_alarm(self.ctl.clock.now(), ALARM, None, msg[:300])

    def _clear(self) -> None:
        if self._down:
            log.info("openadr: VTN %s answering again", self.vtn_url)
            self.ctl.hist.clear_alarm(ALARM, None)
            self.ctl.hist.log_event(self.ctl.clock.now(), "openadr_up", vtn_url=self.vtn_url)
        self._down = False

    def _supervise(self) -> None:
        # opt decisions need the fleet's margin: let the cycle read the devices once first
        deadline = time.monotonic() + max(3 * self.ctl.cfg.cycle_s, 10.0)
        while not self.ctl.last_report and time.monotonic() < deadline and not self._stop.is_set():
            self._stop.wait(0.1)
        while not self._stop.is_set():
            if self.ven is None or not self.ven.registered:
                ven = self.make_ven()
                try:
                    ven.start(timeout_s=self.start_timeout_s)
                except VenError as e:
                    self._alarm(f"registration failed: {e}")
                    self._stop.wait(self.retry_s)
                    continue
                self.ven = ven
                self.ven_id = ven.ven_id
                self._clear()
                log.info("openadr: registered with %s as %s", self.vtn_url, ven.ven_id)
                self.ctl.hist.log_event(self.ctl.clock.now(), "openadr_registered",
                                        vtn_url=self.vtn_url, ven_id=ven.ven_id)
            t0 = time.monotonic()
            try:
                self.ven.poll_now(timeout_s=max(self.poll_s, 5.0))
            except (VenError, DrError, TimeoutError, OSError) as e:
                log.info("openadr: poll failed: %s", e)
            except Exception as e:  # noqa: BLE001 - a VEN bug must not take the service down
                log.warning("openadr: poll raised %s: %s", type(e).__name__, e)
            silent = self.ven.silent_s()
            if silent > self.down_after_s:
                self._alarm(f"VTN {self.vtn_url} silent for {silent:.0f} s")
            else:
                self._clear()
            self._stop.wait(max(self.poll_s - (time.monotonic() - t0), 0.05))

    @property
    def registered(self) -> bool:
        return self.ven is not None and self.ven.registered

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s + self.start_timeout_s)
        if self.ven is not None:
            self.ven.stop(timeout_s)


def _same(e, spec: dict) -> bool:
    return (e is not None and e.status in ("pending", "active")
            and abs(e.reduction_kw - spec["reduction_kw"]) < 1e-9 and abs(e.start_t - spec["start_t"]) < 1e-6
            and abs(e.end_t - spec["end_t"]) < 1e-6 and e.groups == spec["groups"])

