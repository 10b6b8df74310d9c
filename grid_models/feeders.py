"""Feeder builders: the built-in CIGRE networks, SimBench codes and pandapower JSON files."""

from __future__ import annotations

import functools
import gc
import logging
import os
import pickle
import warnings
from pathlib import Path

import pandapower as pp
import pandapower.networks as pn

BUILTIN_FEEDERS = {
    "cigre_mv": "CIGRE medium-voltage benchmark (20 kV, 15 buses; with_der adds its PV/wind)",
    "cigre_lv": "CIGRE low-voltage benchmark (0.4 kV, 44 buses, residential/industrial/commercial)",
    "simbench": "any SimBench code, e.g. 1-MV-rural--0-sw, 1-LV-rural1--0-sw (data ships offline)",
    "pandapower_json": "a pandapower network saved with pandapower.to_json",
}

log = logging.getLogger("grid_models.feeders")

SIMBENCH_EXAMPLES = ["1-MV-rural--0-sw", "1-MV-semiurb--0-sw", "1-LV-rural1--0-sw", "1-LV-urban6--0-sw"]


class FeederError(ValueError):
    """The feeder named by a scenario cannot be built; message is one line."""


def build_feeder(kind: str, code: str | None = None, path: str | Path | None = None,
                 with_der: bool = True) -> pp.pandapowerNet:
    """Return a fresh pandapower net for a feeder spec (see BUILTIN_FEEDERS)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "cigre_mv":
            net = pn.create_cigre_network_mv(with_der="pv_wind" if with_der else False)
        elif kind == "cigre_lv":
            net = pn.create_cigre_network_lv()
        elif kind == "simbench":
            net = _simbench_net(code)
        elif kind == "pandapower_json":
            try:
                net = pp.from_json(str(path))
            except Exception as e:
                raise FeederError(f"feeder.path: cannot load pandapower JSON {path}: {e}") from None
        else:
            raise FeederError(f"feeder.kind: unknown feeder kind {kind!r}")
    if not with_der:
        net.sgen.drop(net.sgen.index, inplace=True)
        net.storage.drop(net.storage.index, inplace=True)
    _enable_ratio_taps(net)
    if len(net.ext_grid) == 0:
        raise FeederError(f"feeder {kind} {code or path or ''}: network has no ext_grid (feeder head)")
    return net


def cache_dir() -> Path | None:
    """Where built SimBench nets are kept: $GRIDTWIN_CACHE_DIR, else $XDG_CACHE_HOME/gridtwin or
    ~/.cache/gridtwin; GRIDTWIN_CACHE_DIR set empty turns the cache off."""
    env = os.environ.get("GRIDTWIN_CACHE_DIR")
    if env is not None:
        return Path(env) if env else None
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gridtwin"


def _simbench_net(code: str) -> pp.pandapowerNet:
    """SimBench's own CSV parsing takes 8-20 s a net; a parsed net is kept on disk (pickle, one
    file per code and SimBench/pandapower version, written atomically, rebuilt when unreadable)
    and loads in a fraction of a second."""
    import simbench

    folder = cache_dir()
    path = None if folder is None else folder / f"simbench-{code}-sb{simbench.__version__}-pp{pp.__version__}.pkl"
    if path is not None and path.is_file():
        try:
            with path.open("rb") as f:
                net = pickle.load(f)
            gc.collect()  # age the ~200k loaded objects now, not in a run's first collections
            return net
        except Exception as e:  # noqa: BLE001 - a damaged cache file is rebuilt, never trusted
            log.warning("SimBench cache %s unreadable (%s); rebuilding it", path, e)
    try:
        net = simbench.get_simbench_net(code)
    except Exception as e:  # simbench raises bare Exceptions for unknown codes
        raise FeederError(f"feeder.code: unknown SimBench code {code!r} ({e})") from None
    if path is not None:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                pickle.dump(net, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)  # parallel builders each write whole files
        except OSError as e:
            log.warning("SimBench cache %s not written: %s", path, e)
            tmp.unlink(missing_ok=True)
    return net


def build_feeder_cached(kind: str, code: str | None = None, path: str | Path | None = None,
                        with_der: bool = True) -> pp.pandapowerNet:
    """Like build_feeder, but the same spec is built once per process: for checks that only
    read the net (scenario validation builds SimBench feeders in seconds). Do not modify it."""
    stamp = None
    if path is not None:
        try:
            st = Path(path).stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
    return _cached_feeder(kind, code, str(path) if path is not None else None, stamp, with_der)


@functools.lru_cache(maxsize=8)
def _cached_feeder(kind, code, path, stamp, with_der):
    return build_feeder(kind, code, path, with_der)


def _enable_ratio_taps(net: pp.pandapowerNet) -> None:
    """pandapower ignores tap_pos unless tap_changer_type is set; SimBench leaves it empty."""
    if "tap_changer_type" not in net.trafo or not len(net.trafo):
        return
    has_tap = net.trafo.tap_step_percent.notna() & net.trafo.tap_changer_type.isna()
    net.trafo.loc[has_tap, "tap_changer_type"] = "Ratio"


def load_buses(net: pp.pandapowerNet) -> list[int]:
    """Buses with at least one load, in index order (the default DER placement)."""
    return sorted(set(int(b) for b in net.load.bus[net.load.in_service]))


def lv_buses(net: pp.pandapowerNet) -> list[int]:
    """Buses at the lowest voltage level of the feeder (in service)."""
    vn = net.bus.vn_kv[net.bus.in_service]
    return sorted(int(b) for b in vn.index[vn == vn.min()])


def head_buses(net: pp.pandapowerNet) -> list[int]:
    return [int(b) for b in net.ext_grid.bus]
