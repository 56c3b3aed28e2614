"""Golden text renders: exact expected output for each plan in render_cases."""

from __future__ import annotations

import pytest

from reconciler.render.text import RenderOptions, render_text

from .render_cases import RENDER_CASES, RenderCase

EXPECTED = {
    "no-changes": (
        "No changes. The nodes match the manifests.\n"
    ),
    "no-changes-git-clean": (
        "Manifests: commit aaaaaaaaaaaa (clean)\n"
        "\n"
        "No changes. The nodes match the manifests.\n"
    ),
    "start": (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  + web on a\n"
        "      # declared in the manifests, not started yet\n"
        "\n"
        "Plan: 1 to start, 0 to restart, 0 to migrate, 0 to stop.\n"
    ),
    "mixed": (
        "Manifests: commit 0123456789ab (uncommitted changes)\n"
        "\n"
        "Reconciler will perform the following actions:\n"
        "\n"
        "  - halt on b  [phase 0]\n"
        "      # run strategy Halted keeps it stopped\n"
        "\n"
        "  -> mover from a to b (offline migration)  [phase 0]\n"
        "      # the node changed in the manifests\n"
        "      node: \"a\" -> \"b\"\n"
        "\n"
        "  + new on a  [phase 1]\n"
        "      # declared in the manifests, not started yet\n"
        "\n"
        "  -/+ web on a  [phase 1]\n"
        "      # the spec changed; a new QEMU process is needed\n"
        "      memory_mib: 512 -> 1024  # forces restart\n"
        "      labels: [] -> [[\"tier\",\"web\"]]\n"
        "\n"
        "Pending changes (not applied by this plan):\n"
        "\n"
        "  ~ db on a\n"
        "      # update policy Pending: applied at the next restart\n"
        "      vcpus: 1 -> 4  # forces restart\n"
        "\n"
        "Orphaned instances (not in the manifests):\n"
        "\n"
        "  keep on b (running): protect: true; prune never stops it\n"
        "  old on b (running): --prune would stop it\n"
        "\n"
        "Plan: 1 to start, 1 to restart, 1 to migrate, 1 to stop.\n"
    ),
    "restarts-and-prune": (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  - gone on b\n"
        "      # not in the manifests; pruning is on\n"
        "\n"
        "  -/+ off on a (in place: system_reset + cont)\n"
        "      # the guest powered itself off; the run strategy restarts it\n"
        "\n"
        "  + stale on a\n"
        "      # stale pidfile (process gone); cleaned up before the start\n"
        "\n"
        "  -/+ web from a to b\n"
        "      # the node and the spec changed; stopped on the old node, started on the new one\n"
        "      node: \"a\" -> \"b\"\n"
        "      vcpus: 1 -> 2  # forces restart\n"
        "\n"
        "Orphaned instances (not in the manifests):\n"
        "\n"
        "  gone on b (running): stopped by this plan (pruning is on)\n"
        "\n"
        "Plan: 1 to start, 2 to restart, 0 to migrate, 1 to stop.\n"
    ),
    "errors-and-warnings": (
        "Targets: big, dup, web\n"
        "\n"
        "Warnings:\n"
        "\n"
        "  ! instance web on a: state unknown (QMP did not answer); left out of the plan\n"
        "\n"
        "Errors:\n"
        "\n"
        "  x instance dup: running on several nodes at once (a, b); refusing to choose one\n"
        "  x instance big: no node has room for 4096 MiB (a 0 MiB free)\n"
        "\n"
        "Plan: 0 to start, 0 to restart, 0 to migrate, 0 to stop.\n"
        "2 errors: this plan cannot be applied.\n"
    ),
    "record-update": (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  ~ db on a (record updated in place)\n"
        "      # only fields that QEMU does not read changed; no restart needed\n"
        "      update_policy: \"Immediate\" -> \"Pending\"\n"
        "\n"
        "  ~ web on a (record updated in place)\n"
        "      # only fields that QEMU does not read changed; no restart needed\n"
        "      labels: [] -> [[\"tier\",\"web\"]]\n"
        "      protect: false -> true\n"
        "      shutdown_timeout: 30.0 -> 5.0\n"
        "\n"
        "Pending changes (not applied by this plan):\n"
        "\n"
        "  ~ db on a\n"
        "      # update policy Pending: applied at the next restart\n"
        "      vcpus: 1 -> 2  # forces restart\n"
        "\n"
        "Plan: 0 to start, 0 to restart, 0 to migrate, 0 to stop, "
        "2 records to update in place (no restart).\n"
    ),
    "handoff": (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  - r1 on a  [phase 0]\n"
        "      # not in the manifests; pruning is on\n"
        "\n"
        "  + r2 on a  [phase 1]\n"
        "      # declared in the manifests, not started yet\n"
        "      # after r1 releases disk /srv/r.img\n"
        "\n"
        "Orphaned instances (not in the manifests):\n"
        "\n"
        "  r1 on a (running): stopped by this plan (pruning is on)\n"
        "\n"
        "Plan: 1 to start, 0 to restart, 0 to migrate, 1 to stop.\n"
    ),
    "record-update-color": (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  \u001b[33m~\u001b[0m \u001b[1mweb on a (record updated in place)\u001b[0m\n"
        "      # only fields that QEMU does not read changed; no restart needed\n"
        "      protect: false -> true\n"
        "\n"
        "Plan: 0 to start, 0 to restart, 0 to migrate, 0 to stop, 1 record to update in place (no restart).\n"
    ),
    "capped-migration": (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  -> fast from a to b (live migration)\n"
        "      # the node changed in the manifests\n"
        "      node: \"a\" -> \"b\"\n"
        "\n"
        "  -> odd from a to b (live migration, capped at 1000 B/s)\n"
        "      # the node changed in the manifests\n"
        "      node: \"a\" -> \"b\"\n"
        "\n"
        "  -> slow from a to b (live migration, capped at 4 MiB/s)\n"
        "      # the node changed in the manifests\n"
        "      node: \"a\" -> \"b\"\n"
        "\n"
        "Plan: 0 to start, 0 to restart, 3 to migrate, 0 to stop.\n"
    ),
    "color": (
        "Reconciler will perform the following actions:\n"
        "\n"
        "  \u001b[36m->\u001b[0m \u001b[1mm from a to b (live migration)\u001b[0m\n"
        "      # the node changed in the manifests\n"
        "      node: \"a\" -> \"b\"\n"
        "\n"
        "  \u001b[32m+\u001b[0m \u001b[1mn on b\u001b[0m\n"
        "      # declared in the manifests, not started yet\n"
        "\n"
        "  \u001b[33m-/+\u001b[0m \u001b[1mweb on a\u001b[0m\n"
        "      # the spec changed; a new QEMU process is needed\n"
        "      memory_mib: 512 -> 1024  \u001b[31m# forces restart\u001b[0m\n"
        "\n"
        "  \u001b[31m-\u001b[0m \u001b[1mx on a\u001b[0m\n"
        "      # not in the manifests; pruning is on\n"
        "\n"
        "Orphaned instances (not in the manifests):\n"
        "\n"
        "  x on a (running): stopped by this plan (pruning is on)\n"
        "\n"
        "Plan: 1 to start, 1 to restart, 1 to migrate, 1 to stop.\n"
    ),
}


@pytest.mark.parametrize("case", RENDER_CASES, ids=lambda c: c.id)
def test_render_text(case: RenderCase) -> None:
    assert render_text(case.plan, RenderOptions(color=case.color), case.git) == EXPECTED[case.id]
