"""The device-kind protocol (controller/kinds/): for every steerable kind and setpoint, the
gate's device model is consistent: values inside the kind's bounds turn into an injection
that the inverse maps back to the same injection, the neutral value gives the 'null'
injection, and a kind's shed never asks for more than its ratings allow."""

import numpy as np
import pytest
from groups import group
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.kinds import CONTROLLABLE, DR_KINDS, KINDS

N = 5


def fleet(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    r = lambda lo, hi: rng.uniform(lo, hi, N)  # noqa: E731
    return group(kind, kind, N, p_kw=r(0, 5), p_avail_kw=r(0, 8), p_base_kw=r(1, 20),
                 connected=(r(0, 1) > 0.3).astype(float), soc_kwh=r(2, 9), e_need_kwh=r(0, 20),
                 r_p_max_kw=r(3, 11), r_s_rated_kva=r(8, 12), r_flex_share=r(0.2, 1.0),
                 r_p_rated_kw=r(1, 4), r_soc_min_kwh=np.ones(N), r_p_nom_kw=r(10, 20))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), frac=st.floats(0.0, 1.0))
def test_injection_and_its_inverse_agree(seed, frac):
    for name in CONTROLLABLE:
        k = KINDS[name]
        g = fleet(name, seed)
        for sp in k.setpoints:
            lo, hi = k.bounds(g, sp)
            lo, hi = np.where(np.isfinite(lo), lo, -50.0), np.where(np.isfinite(hi), hi, 50.0)
            v = lo + frac * (hi - lo)
            cur = g.get("p_kw")
            inj, null = k.injection(g, sp, v, cur)
            assert np.all(np.isfinite(inj)) and np.all(np.isfinite(null)), (name, sp)
            if sp in k.all_or_nothing:
                continue  # on/off: kept whole or rejected, never inverted
            back, _ = k.injection(g, sp, k.setpoint_for(g, sp, inj, cur), cur)
            assert np.allclose(back, inj, atol=1e-6), (name, sp, v, inj, back)


@pytest.mark.parametrize("name", DR_KINDS)
def test_shed_stays_inside_the_ratings(name):
    k = KINDS[name]
    g = fleet(name, 3)
    margin, hold, value = k.shed(g, np.nan_to_num(g.get("p_kw")), 0.0, 3600.0)
    lo, hi = k.bounds(g, k.dr_setpoint)
    assert np.all(margin >= 0) and np.all(hold >= 0)
    assert np.all((value >= lo - 1e-9) & (value <= hi + 1e-9))
    released = k.released(g)
    assert np.all((released >= lo - 1e-9) & (released <= hi + 1e-9))
