"""A real openleadr VTN on 127.0.0.1 for tests (its own thread and event loop), and wait_for."""

import asyncio
import threading
from datetime import timedelta

from openleadr import OpenADRServer
from polling import wait as wait_for  # noqa: F401 (re-exported for the OpenADR tests)
from ports import free_port

VEN_ID = "ven-gridtwin"


class Vtn:
    """Registers one VEN (VEN_ID), accepts its reports, records opt answers per event."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.opts: list[tuple] = []
        self.reports: list[tuple] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.server = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._ready.wait(10), "VTN did not start"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"

    def _run(self):
        asyncio.set_event_loop(self.loop)
        # ven_lookup is called with the keyword ven_id=...
        s = OpenADRServer(vtn_id="VTN1", http_host="127.0.0.1", http_port=self.port,
                          requested_poll_freq=timedelta(seconds=1),
                          ven_lookup=lambda ven_id: {"ven_id": VEN_ID, "ven_name": "gridtwin-vpp",
                                                     "registration_id": "reg-1"})
        s.add_handler("on_create_party_registration", lambda info: (VEN_ID, "reg-1"))
        # the full-report form (the compact one answered HTTP 500 here)
        s.add_handler("on_register_report", lambda report: [
            (rd["r_id"], self.reports.extend, timedelta(seconds=1))
            for rd in report["report_descriptions"]])
        self.server = s
        self.loop.run_until_complete(s.run())
        self._ready.set()
        self.loop.run_forever()

    def add_event(self, event_id, payload_kw, start, minutes=30.0, targets=None):
        def add():
            self.server.add_event(
                ven_id=VEN_ID, signal_name="LOAD_DISPATCH", signal_type="delta",
                intervals=[{"dtstart": start, "duration": timedelta(minutes=minutes),
                            "signal_payload": payload_kw}],
                callback=lambda ven_id, event_id, opt_type: self.opts.append(
                    (ven_id, event_id, opt_type)),
                event_id=event_id, targets=targets)
        self.loop.call_soon_threadsafe(add)

    def cancel_event(self, event_id):
        self.loop.call_soon_threadsafe(self.server.cancel_event, VEN_ID, event_id)

    def stop(self):
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
