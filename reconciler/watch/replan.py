"""The daemon's replan: `make_plan` limited to the instances that can have changed since the last plan.

A full plan of 10,000 instances walks every one of them (~30 ms), though after one edit all but a few
are exactly as they were. `make_plan` decides most instances at once (`planner.plan.settled`: up where
declared, with the declared spec, wanted up), from nothing but the instance's spec, its records and the
set of nodes. So once a plan is made, the next one only needs the instances that were not settled then,
plus those whose spec or actual state is a different object now (the manifest cache and the incremental
discovery keep the objects of what did not change): `make_plan(..., targets=those)` plans them, and every
other instance would have planned nothing. The plan is made in full instead when that argument does not
hold: the first time, when the nodes, the pruning switch or the unreachable nodes are not the same, or
when the last plan had an error about more than one instance (capacity, an empty tree, ordering).
A property test (tests/watch/test_replan.py) checks that the result equals the full plan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, replace

from reconciler.actual import ActualInstance, ActualState
from reconciler.model import DesiredState
from reconciler.planner import Plan, make_plan
from reconciler.planner.plan import settled


@dataclass(frozen=True, slots=True)
class _Last:
    desired: DesiredState
    actual: ActualState
    prune: bool
    unsettled: frozenset[str]  # names the last plan did not decide at once


class Replanner:
    """Plans as `make_plan(desired, actual, prune=prune)` would, looking only at what may have moved."""

    def __init__(self) -> None:
        self._last: _Last | None = None
        self.last_targets: int | None = None  # instances the last plan looked at (None: all)

    def plan(self, desired: DesiredState, actual: ActualState, prune: bool | None = None) -> Plan:
        prune_on = desired.prune if prune is None else prune
        last = self._last
        targets = self._targets(last, desired, actual, prune_on) if last is not None else None
        records: dict[str, list[ActualInstance]] = defaultdict(list)
        names: Collection[str]
        if targets is None:
            plan = make_plan(desired, actual, prune=prune)
            for rec in actual.instances:
                records[rec.name].append(rec)
            names = desired.instances.keys() | records.keys()
        else:
            plan = replace(make_plan(desired, actual, prune=prune, targets=targets), targets=None)
            for rec in actual.instances:
                if rec.name in targets:
                    records[rec.name].append(rec)
            names = targets
        unsettled = frozenset(n for n in names if not settled(desired.instances.get(n), records.get(n, ()),
                                                              desired))
        global_errors = any(not e.subject.startswith("instance ") for e in plan.errors)
        usable = not global_errors and not actual.unreachable
        self._last = _Last(desired, actual, prune_on, unsettled) if usable else None
        self.last_targets = None if targets is None else len(targets)
        return plan

    @staticmethod
    def _targets(last: _Last, desired: DesiredState, actual: ActualState,
                 prune_on: bool) -> frozenset[str] | None:
        if prune_on != last.prune or actual.unreachable or (
                desired.nodes is not last.desired.nodes and desired.nodes != last.desired.nodes):
            return None
        before = last.desired.instances
        changed = {n for n, spec in desired.instances.items() if before.get(n) is not spec}
        changed.update(n for n in before if n not in desired.instances)
        kept = {id(i) for i in actual.instances}
        changed.update(i.name for i in last.actual.instances if id(i) not in kept)  # gone or replaced
        was = {id(i) for i in last.actual.instances}
        changed.update(i.name for i in actual.instances if id(i) not in was)  # new or replaced
        return frozenset(changed | last.unsettled)
