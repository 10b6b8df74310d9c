"""The controller cycle against the twin's real fleet physics (hil/direct.py): a DR event is
met within 5 % of the request, when six batteries drop out mid-event the others make up the
difference, and every device is handed back after the event."""

import numpy as np
import pytest
from lv_fleet import lv_scenario

from hil.direct import attach_controller
from twin.simulation import Twin

CYCLE_S = 60.0
REQUEST_KW = 80.0
EV_START, EV_END, DROP_T = 600.0, 3000.0, 1800.0


def scenario():
    # this feeder is below its voltage band at the evening peak: the gate (tested on its own)
    # would hold the EVs back; here the DR program alone is under test
    return lv_scenario("2026-01-15T17:30:00Z", 3600, 5.0, 300.0,
                       {"cycle_s": CYCLE_S, "objective": "dr", "safety_gate": False},
                       [{"id": "peak", "start": "2026-01-15T17:40:00Z",
                         "duration_s": EV_END - EV_START, "reduction_kw": REQUEST_KW}])


@pytest.fixture(scope="module")
def run():
    tw = Twin(scenario())
    att = attach_controller(tw)

    def drop(t):
        if t.t_s == DROP_T:  # six batteries stop answering mid-event
            t.fleets["home_batteries"].available[:6] = False

    tw.after_step.append(drop)
    tw.run()
    att.finish(tw)
    ev = att.controller.dr["peak"]
    t = EV_START + CYCLE_S * np.arange(1, len(ev.samples) + 1)
    return tw, att.controller, t, np.asarray(ev.samples)


def test_event_delivered_within_5_percent(run):
    tw, _ctl, t, got = run
    settled = (t >= EV_START + 4 * CYCLE_S) & ((t < DROP_T) | (t >= DROP_T + 5 * CYCLE_S))
    err = np.abs(got[settled] - REQUEST_KW) / REQUEST_KW
    assert err.max() < 0.05, f"worst cycle off by {100 * err.max():.1f} %: {np.round(got, 1)}"
    dr = tw.kpi_extra["dr"]["peak"]
    assert dr["status"] == "completed" and 95.0 <= dr["delivery_pct"] <= 105.0, dr


def test_dropout_is_made_up_by_the_others(run):
    _tw, ctl, t, got = run
    bat = ctl.state.groups["home_batteries"]
    assert not bat.available[:6].any() and bat.available[6:].all()  # excluded from dispatch
    recovered = got[(t >= DROP_T + 5 * CYCLE_S) & (t < EV_END)]
    assert np.all(np.abs(recovered - REQUEST_KW) / REQUEST_KW < 0.05), np.round(got, 1)


def test_devices_released_after_the_event(run):
    tw, _ctl, _t, _got = run
    ev, bat = tw.fleets["ev_chargers"], tw.fleets["home_batteries"]
    assert np.allclose(ev.p_max_set_kw[ev.connected], ev.p_max_kw[ev.connected])
    assert np.all(bat.p_set_kw[6:] == 0.0) and np.all(tw.fleets["pumps"].curtail_pct == 0.0)


if __name__ == "__main__":  # print the per-cycle delivery for the report
    _tw, _c, t, got = run.__wrapped__()
    for ti, g in zip(t, got):
        print(f"t={ti:6.0f} s requested={REQUEST_KW:.1f} kW delivered={g:.2f} kW")
