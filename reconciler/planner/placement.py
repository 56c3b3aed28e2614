"""Node memory bookkeeping for a plan: placement of unscheduled instances, capacity, and phases.

Works on `Move`s: an action plus what it does to each node's memory (positive: takes, negative:
frees). A migration takes memory on the target before the source frees it; a restart on one node
frees its old size and takes its new one. Pure; no I/O.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from reconciler.model import NodeSpec
from reconciler.planner.actions import Action, ActionKind, Handoff, PlanProblem, ProblemKind
from reconciler.values import Value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Move(Value):
    """What one action does to its nodes' memory and exclusive resources."""

    action: Action
    deltas: tuple[tuple[str, int], ...]  # (node, MiB): > 0 takes memory there, < 0 frees it
    takes: frozenset[str] = frozenset()  # exclusive resources the new process needs (planner.handoff)
    frees: frozenset[str] = frozenset()  # exclusive resources the stopped process releases


def capacity(nodes: Mapping[str, NodeSpec], node: str) -> float:
    spec = nodes.get(node)
    return math.inf if spec is None or spec.memory_mib is None else float(spec.memory_mib)


def final_usage(current: Mapping[str, int], moves: Iterable[Move]) -> dict[str, int]:
    usage = defaultdict(int, current)
    for move in moves:
        for node, delta in move.deltas:
            usage[node] += delta
    return dict(usage)


def place(
    action: Action, nodes: Mapping[str, NodeSpec], usage: dict[str, int]
) -> tuple[Move | None, PlanProblem | None]:
    """Put an unscheduled start on the node with the most free memory that holds it (ties: by name)."""
    need = action.memory_mib
    best: tuple[float, str] | None = None
    for name in sorted(nodes):
        free = capacity(nodes, name) - usage.get(name, 0)
        if free >= need and (best is None or free > best[0]):
            best = (free, name)
    if best is None:
        figures = ", ".join(
            f"{n} {_fmt(capacity(nodes, n) - usage.get(n, 0))} MiB free" for n in sorted(nodes)
        ) or "no nodes declared"
        return None, PlanProblem(
            ProblemKind.PLACEMENT, f"instance {action.name}",
            f"no node has room for {need} MiB ({figures})",
        )
    node = best[1]
    usage[node] = usage.get(node, 0) + need
    return Move(replace(action, node=node), ((node, need),)), None


_LISTED = 5  # instances named in a capacity error; the rest are counted


def _fmt(value: float) -> str:
    return "unlimited" if math.isinf(value) else str(int(value))


def capacity_problems(
    nodes: Mapping[str, NodeSpec], current: Mapping[str, int], moves: tuple[Move, ...]
) -> tuple[PlanProblem, ...]:
    """Nodes the plan adds memory to and leaves above their allowance."""
    usage = final_usage(current, moves)
    problems = []
    for node in sorted(usage):
        adders = sorted((m.action.name, d) for m in moves for n, d in m.deltas if n == node and d > 0)
        limit = capacity(nodes, node)
        if adders and usage[node] > limit:
            listed = ", ".join(f"{name} +{d} MiB" for name, d in adders[:_LISTED])
            if len(adders) > _LISTED:
                listed += f", and {len(adders) - _LISTED} more"
            problems.append(PlanProblem(
                ProblemKind.CAPACITY, f"node {node}",
                f"the plan puts {usage[node]} MiB of instance memory on it, "
                f"it allows {int(limit)} MiB ({listed})",
            ))
    return tuple(problems)


def assign_phases(
    nodes: Mapping[str, NodeSpec], current: Mapping[str, int], moves: tuple[Move, ...]
) -> tuple[tuple[Move, ...], PlanProblem | None]:
    """Give each action a phase: whatever frees memory on a node that would overflow comes first.

    Constraints: on a node whose peak (current + everything the plan adds) exceeds its allowance,
    each action adding memory waits for every action freeing memory there; an instance's
    duplicate-copy stops precede its other action; and an action that needs a resource (a disk, a VNC
    display, a MAC, a tap) waits for another instance's action that releases it. Everything else runs
    in phase 0, in parallel.
    """
    peak = defaultdict(int, current)
    for m in moves:
        for node, d in m.deltas:
            if d > 0:
                peak[node] += d
    tight = {n for n, p in peak.items() if p > capacity(nodes, n)}
    adds_on: list[tuple[str, ...]] = []  # per move: the tight nodes it takes memory on
    freers: dict[str, list[int]] = defaultdict(list)  # tight node -> moves freeing memory there
    stops_by_name: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(moves):
        adds_on.append(tuple(n for n, d in m.deltas if d > 0 and n in tight))
        for node, d in m.deltas:
            if d < 0 and node in tight:
                freers[node].append(i)
        if m.action.kind is ActionKind.STOP:
            stops_by_name[m.action.name].append(i)
    after_stops = [
        stops_by_name.get(m.action.name, []) if m.action.kind is not ActionKind.STOP else [] for m in moves
    ]
    handoffs = _handoffs(moves)
    phases = [0] * len(moves)
    # Longest-path layering. A chain crosses each tight node at most once and each hand-off at most
    # once (a stop waits on nothing), so needing more rounds than that means the constraints form a cycle.
    for _ in range(len(tight) + 3 + sum(1 for h in handoffs if h)):
        ready = {n: max(phases[j] + 1 for j in js) for n, js in freers.items()}
        changed = False
        for i in range(len(moves)):
            want = max(
                max((ready.get(n, 0) for n in adds_on[i]), default=0),
                max((phases[j] + 1 for j in after_stops[i]), default=0),
                max((phases[j] + 1 for j in handoffs[i]), default=0),
            )
            if want > phases[i]:
                phases[i], changed = want, True
        if not changed:
            return _phased(moves, phases, handoffs), None
    if any(handoffs):
        stuck = sorted({moves[i].action.name for i in range(len(moves)) if adds_on[i] or handoffs[i]})
        what = "memory moves and resource hand-offs (disks, VNC displays, MACs, taps)"
    else:
        stuck = sorted({moves[i].action.name for i in range(len(moves)) if adds_on[i]})
        what = "memory moves between nodes"
    return moves, PlanProblem(
        ProblemKind.ORDERING, "plan",
        f"{what} form a cycle no ordering can satisfy (" + ", ".join(stuck) + ")",
    )


def _phased(moves: tuple[Move, ...], phases: list[int], handoffs: list[list[int]]) -> tuple[Move, ...]:
    """The moves with their phases and the hand-offs that explain them (replace() is slow: only where
    something changes)."""
    out = []
    for i, (m, p) in enumerate(zip(moves, phases, strict=True)):
        if m.action.phase == p and not handoffs[i]:
            out.append(m)
            continue
        why = sorted({Handoff(moves[j].action.name, res)
                      for j in handoffs[i] for res in m.takes & moves[j].frees},
                     key=lambda h: (h.instance, h.resource))
        out.append(replace(m, action=replace(m.action, phase=p, handoffs=tuple(why))))
    return tuple(out)


def _handoffs(moves: tuple[Move, ...]) -> list[list[int]]:
    """Per move: the moves of other instances that release a resource it needs."""
    releasers: dict[str, list[int]] = defaultdict(list)
    for j, m in enumerate(moves):
        for res in m.frees:
            releasers[res].append(j)
    if not releasers:
        return [[] for _ in moves]
    return [sorted({j for res in m.takes for j in releasers.get(res, ())
                    if moves[j].action.name != m.action.name}) for m in moves]
