"""The pure planner: DesiredState + ActualState -> Plan (see planner.plan for the rules)."""

from reconciler.planner.actions import (
    Action,
    ActionKind,
    FieldChange,
    Handoff,
    Orphan,
    OrphanFate,
    PendingChange,
    Plan,
    PlanProblem,
    ProblemKind,
    Reason,
)
from reconciler.planner.plan import make_plan

__all__ = [
    "Action", "ActionKind", "FieldChange", "Handoff", "Orphan", "OrphanFate", "PendingChange", "Plan",
    "PlanProblem", "ProblemKind", "Reason", "make_plan",
]
