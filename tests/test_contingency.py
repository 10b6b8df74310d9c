"""N-1 screening sanity: parallel head transformers share load, radial outages island buses,
and loadings agree with pandapower's own contingency module."""

import warnings

import numpy as np
import pandapower as pp
import pytest
from pandapower.contingency import run_contingency

from grid_models.contingency import head_trafos, main_lines, screen_n1
from grid_models.feeders import build_feeder
from scenarios.model import Limits


@pytest.fixture(scope="module")
def mv_net():
    return build_feeder("simbench", "1-MV-rural--0-sw")


def test_parallel_head_trafos_pick_up_the_load(mv_net):
    rep = screen_n1(mv_net, Limits(), n_lines=4)
    assert rep.base.converged and rep.base.secure
    assert head_trafos(mv_net) == [0, 1]
    trafo_cases = [c for c in rep.cases if c.element == "trafo"]
    assert [c.index for c in trafo_cases] == [0, 1]
    base_tl = rep.base.max_trafo_loading_pct
    for c in trafo_cases:
        # two equal parallel 25 MVA units: losing one roughly doubles the other's loading
        assert 1.8 < c.max_trafo_loading_pct / base_tl < 2.2
        assert c.islanded_buses == 0
    assert len([c for c in rep.cases if c.element == "line"]) == 4


def test_matches_pandapower_contingency(mv_net):
    lines = main_lines(mv_net, 3)
    rep = screen_n1(mv_net, Limits(), lines=lines, trafos=[0])
    net = pp.from_json_string(pp.to_json(mv_net))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_contingency(net, {"line": {"index": lines}, "trafo": {"index": [0]}})
    # pandapower keeps the max over all cases per element; ours per case: compare the maxima
    ours = np.nanmax([c.max_trafo_loading_pct for c in rep.cases] + [rep.base.max_trafo_loading_pct])
    assert ours == pytest.approx(np.nanmax(res["trafo"]["max_loading_percent"]), rel=1e-6)
    ours_l = np.nanmax([c.max_line_loading_pct for c in rep.cases] + [rep.base.max_line_loading_pct])
    assert ours_l == pytest.approx(np.nanmax(res["line"]["max_loading_percent"]), rel=1e-6)


def test_radial_outage_islands_buses_and_is_insecure():
    net = build_feeder("cigre_lv")
    rep = screen_n1(net, Limits(v_min_pu=0.9, v_max_pu=1.1), n_lines=3)
    assert rep.base.secure
    head_trafo = [c for c in rep.cases if c.element == "trafo"]
    assert head_trafo and all(c.islanded_buses > 0 for c in head_trafo)  # radial: no backup
    head_line = max((c for c in rep.cases if c.element == "line"), key=lambda c: c.islanded_buses)
    assert head_line.islanded_buses > 0
    assert not head_line.secure and head_line in rep.insecure
    d = rep.as_dict()
    assert d["insecure"] == len(rep.insecure) and d["cases"][0]["element"] in ("trafo", "line")
