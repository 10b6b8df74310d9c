"""The controller as an OpenADR 2.0b VEN (openleadr 0.5.36): registers with a VTN, turns the
events it receives (EiEvent) into the controller's own DR events, answers optIn/optOut, and
offers a TELEMETRY_USAGE report (delivered reduction, kW) the VTN may request.

There is one DR event model (controller/sources/dr.py `DrState`); the VEN creates and changes
events only through the controller's DR method set, never fields:
    program.add_dr_event(id, start_t, duration_s, reduction_kw, groups, source="openadr", opt=...)
    program.modify_dr_event(id, start_t=..., end_t=..., reduction_kw=..., groups=..., opt=...)
    program.cancel_dr_event(id);  program.set_opt(id, "in" | "out")
    program.dr -> {id: DrState}; program.clock.now()
`program` is the Controller. What the VEN keeps for itself is protocol state only: the
mapping of event intervals to ids; a modification is what differs from the held event.

    ven = OpenAdrVen(ctl, vtn_url="http://127.0.0.1:8080/OpenADR2/Simple/2.0b",
                     ven_name="gridtwin-vpp", headroom_kw=lambda: ctl.margin()["margin_kw"],
                     telemetry_kw=lambda: last_delivered_kw)
    ven.start(timeout_s=10)   # background thread with its own asyncio loop; waits for registration
    ...
    ven.stop(timeout_s=5)

Event mapping (one DR event per event interval, id "oadr:<event_id>" or "oadr:<event_id>:<i>"):
- LOAD_DISPATCH with signal_type 'delta' or 'setpoint': |payload| kW of reduction;
  x-loadControlCapacity: payload is a fraction of `contracted_kw` to shed.
- SIMPLE/LOAD_CONTROL 'level' 0..3: `level_kw[level]` (default 1/3, 2/3, 3/3 of contracted_kw);
  level 0 means no reduction (nothing created, opt in).
- Targets with resource_id name the fleet groups; none means every group.
- event_status 'cancelled' cancels; a new modification_number modifies.
Opt decision: optIn when the summed reduction fits `headroom_kw()` (or when no headroom
function is given), else optOut; `decide` may replace this policy. The VTN sees the opt via
oadrCreatedEvent. An event interval already over is not created; one the controller refuses
(e.g. an unknown group) is reported through `on_refused(event_id, error)`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

log = logging.getLogger(__name__)


class VenError(RuntimeError):
    """The VEN could not start or register (one line, names the VTN URL)."""


class DrError(ValueError):
    """An OpenADR event the VEN cannot translate into a load-reduction request (one line)."""


def _seconds(d) -> float:
    return d.total_seconds() if isinstance(d, timedelta) else float(d or 0.0)


class OpenAdrVen:
    def __init__(self, program, vtn_url: str, ven_name: str = "gridtwin-vpp",
                 ven_id: str | None = None, contracted_kw: float = 100.0,
                 level_kw: dict[int, float] | None = None,
                 headroom_kw: Callable[[], float] | None = None,
                 telemetry_kw: Callable[[], float] | None = None,
                 decide: Callable[[list[dict], dict], str] | None = None,
                 report_sampling_s: float = 10.0, client_options: dict | None = None,
                 on_refused: Callable[[str, Exception], None] | None = None):
        self.program = program
        self.on_refused = on_refused
        self.vtn_url = vtn_url
        self.ven_name = ven_name
        self.ven_id = ven_id
        self.contracted_kw = float(contracted_kw)
        self.level_kw = level_kw or {1: contracted_kw / 3, 2: 2 * contracted_kw / 3, 3: contracted_kw}
        self.headroom_kw = headroom_kw
        self.telemetry_kw = telemetry_kw
        self.decide = decide
        self.report_sampling_s = report_sampling_s
        self.client_options = dict(client_options or {})  # cert, key, passphrase, ca_file, ...
        self.last_answer_mono: float | None = None  # monotonic time of the VTN's last answer
        self.responses: list[tuple[str, str]] = []  # (event_id, optIn/optOut) as answered
        self.errors: list[str] = []
        self.client = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # -- event translation (pure; tested without a VTN too) -------------------------------
    def translate(self, event: dict) -> list[dict]:
        """One request per interval of an OpenADR event dict: id, start_t, end_t, reduction_kw,
        groups (the targets' resource ids; None: every group)."""
        desc = event["event_descriptor"]
        eid = desc["event_id"]
        signals = event.get("event_signals") or []
        if isinstance(signals, dict):
            signals = signals.get("event_signals", [])
        groups = sorted({t["resource_id"] for t in (event.get("targets") or [])
                         if isinstance(t, dict) and t.get("resource_id")}) or None
        active = event["active_period"]
        start0 = active["dtstart"].timestamp()
        out = []
        for sig in signals:
            ivs = sig.get("intervals") or []
            t = start0
            for i, iv in enumerate(sorted(ivs, key=lambda x: x.get("uid", 0) or 0)):
                dur = _seconds(iv.get("duration"))
                st = iv["dtstart"].timestamp() if iv.get("dtstart") is not None else t
                kw = self._reduction_kw(sig["signal_name"], sig["signal_type"],
                                        float(iv.get("signal_payload", 0.0)))
                t = st + dur
                if kw > 0 and dur > 0:
                    out.append({"start_t": st, "end_t": st + dur, "reduction_kw": kw, "groups": groups,
                                "id": f"oadr:{eid}" if len(ivs) == 1 else f"oadr:{eid}:{i}"})
            break  # the first signal carries the request; others (price etc.) are informative
        return out

    def _reduction_kw(self, name: str, stype: str, payload: float) -> float:
        if stype in ("delta", "setpoint") and name in ("LOAD_DISPATCH", "LOAD_CONTROL"):
            return abs(payload)
        if stype == "x-loadControlCapacity":
            return max(min(payload, 1.0), 0.0) * self.contracted_kw
        if stype == "level":
            return float(self.level_kw.get(round(payload), 0.0 if payload <= 0
                                           else self.contracted_kw))
        raise DrError(f"openadr: signal {name}/{stype} is not a load-reduction request")

    def handle_event(self, event: dict) -> str:
        """Apply one OpenADR event to the controller's DR program; returns 'optIn' or 'optOut'."""
        desc = event["event_descriptor"]
        eid, status = desc["event_id"], desc.get("event_status")
        prog = self.program
        mine = [e for e in list(prog.dr.values()) if e.id == f"oadr:{eid}" or e.id.startswith(f"oadr:{eid}:")]
        if status == "cancelled":
            for e in mine:
                if e.status not in ("completed", "cancelled"):
                    prog.cancel_dr_event(e.id)
            return "optIn"
        try:
            specs = self.translate(event)
        except (DrError, KeyError, TypeError, ValueError) as err:
            self.errors.append(f"event {eid}: {err}")
            log.warning("openadr: event %s refused: %s", eid, err)
            return "optOut"
        if self.decide is not None:
            opt = self.decide(specs, event)
        else:
            room = None if self.headroom_kw is None else float(self.headroom_kw())
            opt = "optIn" if room is None or max((s["reduction_kw"] for s in specs),
                                                  default=0.0) <= room + 1e-9 else "optOut"
        o = "in" if opt == "optIn" else "out"
        for s in specs:
            self._apply(s, o)
        log.info("openadr: event %s (%d interval(s), %.1f kW max) -> %s", eid, len(specs),
                 max((s["reduction_kw"] for s in specs), default=0.0), opt)
        self.responses.append((eid, opt))
        return opt

    def _apply(self, s: dict, opt: str) -> None:
        """Create, modify (the VTN's modification: size, window or targets differ from the held
        event; a running event keeps its start and devices) or re-opt one interval's event."""
        prog, eid = self.program, s["id"]
        cur = prog.dr.get(eid)
        try:
            if cur is None:
                if s["end_t"] <= prog.clock.now():
                    log.info("openadr: event %s is over; not created", eid)
                    return
                prog.add_dr_event(eid, s["start_t"], s["end_t"] - s["start_t"], s["reduction_kw"],
                                  s["groups"], source="openadr", opt=opt)
            elif cur.status in ("pending", "active") and _differs(cur, s):
                changes = {"reduction_kw": s["reduction_kw"], "end_t": s["end_t"], "opt": opt}
                if cur.status == "pending":
                    changes.update(start_t=s["start_t"], groups=s["groups"])
                prog.modify_dr_event(eid, **changes)
            elif cur.opt != opt and cur.status in ("pending", "active"):
                prog.set_opt(eid, opt)
        except (ValueError, KeyError) as err:  # e.g. a group or a window the controller refuses
            self.errors.append(f"event {eid}: {err}")
            log.warning("openadr: event %s not taken: %s", eid, err)
            if self.on_refused is not None:
                self.on_refused(eid, err)

    # -- asyncio side ---------------------------------------------------------------------
    async def _on_event(self, event):
        return self.handle_event(event)

    async def _on_update_event(self, event):
        return self.handle_event(event)

    def _answered(self, _content) -> None:
        self.last_answer_mono = time.monotonic()

    def silent_s(self) -> float:
        """Seconds since the VTN last answered an HTTP request (inf before the first)."""
        t = self.last_answer_mono
        return float("inf") if t is None else time.monotonic() - t

    def _report_value(self):
        return float(self.telemetry_kw()) if self.telemetry_kw is not None else 0.0

    def _run(self, timeout_s: float):
        from openleadr import OpenADRClient

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self.client = OpenADRClient(ven_name=self.ven_name, vtn_url=self.vtn_url,
                                        ven_id=self.ven_id, show_fingerprint=False,
                                        **self.client_options)
            self.client.add_hook("after_receive_xml", self._answered)
            self.client.add_handler("on_event", self._on_event)
            self.client.add_handler("on_update_event", self._on_update_event)
            if self.telemetry_kw is not None:
                self.client.add_report(callback=self._report_value, resource_id="vpp",
                                       measurement="power_real", unit="W", scale="k",
                                       sampling_rate=timedelta(seconds=self.report_sampling_s),
                                       report_duration=timedelta(hours=1))
            loop.run_until_complete(asyncio.wait_for(self.client.run(), timeout_s))
            if not self.client.registration_id:
                raise VenError(f"openadr: no registration from VTN {self.vtn_url}")
            self.ven_id = self.client.ven_id
        except BaseException as err:  # noqa: BLE001 - handed to start(), which raises it
            self._start_error = err
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def start(self, timeout_s: float = 10.0) -> OpenAdrVen:
        """Register with the VTN in a background thread; raises VenError if it cannot."""
        if self._thread is not None:
            raise VenError("openadr: VEN already started")
        self._thread = threading.Thread(target=self._run, args=(timeout_s,),
                                        name=f"openadr-ven-{self.ven_name}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s + 2.0):
            raise VenError(f"openadr: VEN did not start within {timeout_s} s ({self.vtn_url})")
        if self._start_error is not None:
            err, self._thread = self._start_error, None
            if isinstance(err, VenError):
                raise err
            raise VenError(f"openadr: registration with {self.vtn_url} failed: "
                           f"{type(err).__name__}: {err}") from err
        return self

    @property
    def registered(self) -> bool:
        return self.client is not None and bool(self.client.registration_id)

    def poll_now(self, timeout_s: float = 5.0) -> None:
        """Poll the VTN once immediately (instead of waiting for the poll interval)."""
        if self._loop is None or self.client is None:
            raise VenError("openadr: VEN not started")
        asyncio.run_coroutine_threadsafe(self.client._poll(), self._loop).result(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, th = self._loop, self._thread
        if loop is None or th is None:
            return
        if loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self.client.stop(), loop).result(timeout_s)
            except Exception as err:  # noqa: BLE001 - still stop the loop; keep the reason
                self.errors.append(f"stop: {type(err).__name__}: {err}")
            loop.call_soon_threadsafe(loop.stop)
        th.join(timeout_s)
        self._thread = None


def _differs(ev, s: dict) -> bool:
    """The VTN's interval asks for something other than the held event."""
    return (abs(ev.reduction_kw - s["reduction_kw"]) > 1e-9 or abs(ev.end_t - s["end_t"]) > 1e-6
            or (ev.status == "pending" and (abs(ev.start_t - s["start_t"]) > 1e-6 or ev.groups != s["groups"])))
