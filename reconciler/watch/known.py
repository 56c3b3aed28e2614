"""What the daemon knows of its nodes between passes, so a pass looks only at what may have moved.

A full discovery lists every state directory, proves every recorded process ours, asks every live monitor
and scans the host's processes: its cost grows with the fleet, and it ran on every pass. Yet the daemon
hears of each change to an instance it manages as it happens: its QEMU's exit (a pidfd), its QMP events
(the watcher socket; a reconnect of that socket counts, since events may have been missed), and the
results of its own actions. So it keeps the state the last pass ended with and the names of the
instances *touched* since; the next pass looks at those alone (`Node.discover_instances`, on every
reachable node) and merges them in. A pass after one edit costs the same with 100 instances as with 1.

Whatever cannot be attributed to one instance is a *doubt*, and a doubt makes the next discovery full:
- startup, the periodic resync, SIGHUP, a host link lost or back, a QEMU trigger that names no instance;
- another run held a node lock since our last pass (`HeldLock.undisturbed`: apply, a verb, `qmp`);
- the reachable nodes are not those of the last full discovery; a node failed during a partial look;
- a pass that failed, crashed or was cancelled (what its actions did is not known).
Instances uncertain by nature (UNKNOWN: a monitor that did not answer in time, a QEMU still starting) and
those another run has in flight are looked at again on every pass until they settle. Unmanaged QEMUs come
from the full scan alone, so one started by hand is reported by the next resync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from reconciler.actual import ActualState, RunState
from reconciler.model import NodeSpec
from reconciler.node import merge_states
from reconciler.values import Value
from reconciler.watch.triggers import Trigger, TriggerSource

# Triggers after which nothing known is trusted (the resync exists to repair what events missed).
DOUBTING = frozenset({TriggerSource.STARTUP, TriggerSource.RESYNC, TriggerSource.SIGHUP, TriggerSource.HOST})


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Look(Value):
    """What one discovery looks at: everything (`full`, with the reason), or the named instances."""

    full: bool
    names: frozenset[str] = frozenset()
    why: str = ""

    @property
    def word(self) -> str:
        """For the pass's log line: "full" or how many instances were looked at."""
        return "full" if self.full else str(len(self.names))


class Known:
    """The last discovered state, the instances touched since, and whether a doubt forces a full look."""

    def __init__(self) -> None:
        self._state: ActualState | None = None
        self._nodes: tuple[tuple[str, NodeSpec], ...] | None = None  # reachable when `_state` was made
        self._touched: set[str] = set()
        self._doubt: str | None = "startup"
        self.last: Look | None = None  # the latest discovery's look

    def touched(self, name: str) -> None:
        """An event of `name`, or an action on it: look at it again (on every node) next pass."""
        self._touched.add(name)

    def doubt(self, why: str) -> None:
        """Trust nothing: the next discovery is full."""
        if self._doubt is None:
            self._doubt = why

    def heard(self, triggers: Iterable[Trigger]) -> None:
        """The triggers of the pass about to run: doubts for those that call for a full look."""
        for t in triggers:
            if t.source in DOUBTING:
                self.doubt(t.source.value)
            elif t.source is TriggerSource.QEMU:
                if t.instance is None:
                    self.doubt(f"an event of no known instance: {t.detail}")
                else:
                    self.touched(t.instance)

    def look(self, nodes: Mapping[str, NodeSpec]) -> Look:
        """What this pass's discovery must look at, given the reachable nodes. Takes the touched names:
        what is touched from now on (during the discovery included) is for the next pass."""
        key = tuple(sorted(nodes.items()))
        if self._doubt is not None or self._state is None or key != self._nodes:
            why = self._doubt or "the reachable nodes changed"
            look = Look(True, why=why)
        else:
            look = Look(False, frozenset(self._touched) | settling(self._state))
        self._doubt = None
        self._touched.clear()
        self.last = look
        return look

    def learned(self, nodes: Mapping[str, NodeSpec], actual: ActualState) -> None:
        """The state this pass's discovery ended with (full, or merged), and the nodes it covered."""
        self._state = actual
        self._nodes = tuple(sorted(nodes.items()))

    def merged(self, names: frozenset[str], partial: Sequence[ActualState],
               nodes: Mapping[str, NodeSpec]) -> ActualState:
        """The known state with the instances `names` replaced by what `partial` found of them."""
        assert self._state is not None
        return merge(self._state, names, partial, nodes)


def settling(state: ActualState) -> frozenset[str]:
    """Instances to look at on every pass until they settle: no clear state yet, or another run's."""
    return frozenset({i.name for i in state.instances if i.state is RunState.UNKNOWN or i.qmp_unresponsive}
                     | {f.name for f in state.in_flight})


def merge(known: ActualState, names: frozenset[str], partial: Sequence[ActualState],
          nodes: Mapping[str, NodeSpec]) -> ActualState:
    """`known` with every instance (and in-flight action) named in `names` replaced by those in `partial`
    (a name absent from `partial` is gone), on the nodes `nodes` only (pure). Unmanaged processes stay as
    the last full scan found them, less any that an instance now claims. Unreachable nodes are the
    caller's to add (they are those of this pass)."""
    kept = ActualState(
        instances=tuple(i for i in known.instances if i.name not in names and i.node in nodes),
        unmanaged=known.unmanaged,
        in_flight=tuple(f for f in known.in_flight if f.name not in names and f.node in nodes))
    return merge_states([kept, *partial], {n: s.machine for n, s in nodes.items()})
