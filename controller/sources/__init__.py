"""Command sources: what the cycle asks for setpoints each pass.

Every source is a small object with a `name` (the `source` tag of its commands), a
`priority` (lower wins when two sources command the same setpoint) and

    commands(t, state) -> list[Command]

called once per cycle after telemetry is read and the grid estimated. The cycle merges the
lists by priority (`merge`), sends the batch through the safety gate and writes the result.
Sources: emergency (controller/sources/emergency.py), operator (operator.py), the DR program
(dr.py), the export limit on the head meter (export_limit.py), volt/VAR (voltvar.py) and the
schedule (schedule.py).
"""

from __future__ import annotations

from controller.commands import Command


def merge(cmds: list[Command], priority: dict[str, int]) -> list[Command]:
    """One command per (device, setpoint): the lowest priority number wins; among equals
    the later one (fresh commands after carried ones)."""
    best: dict[tuple[str, str], Command] = {}
    for c in cmds:
        k = (c.device_id, c.setpoint)
        o = best.get(k)
        if o is None or priority.get(c.source, 9) <= priority.get(o.source, 9):
            best[k] = c
    return list(best.values())
