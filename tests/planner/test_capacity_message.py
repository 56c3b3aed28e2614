"""A capacity error stays one readable line however many instances overflow a node."""

from __future__ import annotations

from reconciler.planner import make_plan
from tests.planner.factories import actual, desired, node, spec


def test_capacity_error_names_five_instances_and_counts_the_rest() -> None:
    specs = [spec(f"vm{i}", 512, node="a") for i in range(7)]
    plan = make_plan(desired(*specs, nodes=(node("a", 1024),)), actual(), prune=None, targets=None,
                     allow_empty=False)
    [problem] = plan.errors
    text = str(problem.message)
    assert "the plan puts 3584 MiB of instance memory on it, it allows 1024 MiB" in text
    assert text.endswith("(vm0 +512 MiB, vm1 +512 MiB, vm2 +512 MiB, vm3 +512 MiB, vm4 +512 MiB, and 2 more)")
