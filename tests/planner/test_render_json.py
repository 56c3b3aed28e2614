"""Golden JSON render (format_version 1.0) and the JSON round trip used by saved plans."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import __version__
from reconciler.actual import ActualState
from reconciler.gitinfo import GitInfo
from reconciler.model import DesiredState, Migration, UpdatePolicy
from reconciler.planner import make_plan
from reconciler.render.json import plan_from_dict, plan_to_dict, render_json

from .factories import actual, changed, desired, node, rec, spec
from .test_properties import worlds

WEB = spec("web", node="a")

EXPECTED = """\
{
  "format_version": "1.0",
  "reconciler_version": "VERSION",
  "git": {
    "root": "/srv/m",
    "commit": "ffffffffffffffffffffffffffffffffffffffff",
    "dirty": false
  },
  "prune": false,
  "targets": null,
  "summary": {
    "start": 1,
    "restart": 1,
    "migrate": 0,
    "stop": 0,
    "update": 0
  },
  "empty": false,
  "actions": [
    {
      "name": "big",
      "kind": "start",
      "symbol": "+",
      "reason": "new",
      "reason_text": "declared in the manifests, not started yet",
      "node": "b",
      "source_node": null,
      "phase": 0,
      "in_place": false,
      "clean_stale": false,
      "migration_mode": null,
      "max_bandwidth": null,
      "memory_mib": 8192,
      "changes": []
    },
    {
      "name": "web",
      "kind": "restart",
      "symbol": "-/+",
      "reason": "spec_changed",
      "reason_text": "the spec changed; a new QEMU process is needed",
      "node": "a",
      "source_node": null,
      "phase": 0,
      "in_place": false,
      "clean_stale": false,
      "migration_mode": null,
      "max_bandwidth": null,
      "memory_mib": 512,
      "changes": [
        {
          "path": "vcpus",
          "old": 1,
          "new": 2,
          "forces_restart": true,
          "class": "restart"
        }
      ]
    }
  ],
  "pending": [
    {
      "name": "db",
      "node": "b",
      "reason": "update_pending",
      "reason_text": "update policy Pending: applied at the next restart",
      "changes": [
        {
          "path": "memory_mib",
          "old": 512,
          "new": 1024,
          "forces_restart": true,
          "class": "restart"
        }
      ]
    }
  ],
  "orphans": [
    {
      "name": "old",
      "node": "a",
      "state": "running",
      "fate": "would stop"
    }
  ],
  "warnings": [],
  "unreachable": [],
  "held": [],
  "errors": [
    {
      "kind": "capacity",
      "subject": "node b",
      "detail": "the plan puts 8704 MiB of instance memory on it, it allows 2048 MiB (big +8192 MiB)",
      "message": "node b: the plan puts 8704 MiB of instance memory on it, it allows 2048 MiB (big +8192 MiB)",
      "where": null
    }
  ]
}
"""  # noqa: E501 (the golden text has the message's full line)


def test_render_json_golden() -> None:
    plan = make_plan(
        desired(changed(WEB, vcpus=2),
                spec("db", node="b", update_policy=UpdatePolicy.PENDING, memory_mib=1024),
                spec("big", 8192, node="b"), nodes=(node("a"), node("b", 2048))),
        actual(rec(WEB, "a"), rec(spec("db", node="b", update_policy=UpdatePolicy.PENDING), "b"),
               rec(spec("old"), "a")),
    )
    text = render_json(plan, GitInfo("/srv/m", "f" * 40, False))
    assert text == EXPECTED.replace("VERSION", __version__)


EXPECTED_UPDATE = """\
{
  "start": 0,
  "restart": 0,
  "migrate": 0,
  "stop": 0,
  "update": 1
}
[
  {
    "name": "web",
    "kind": "update",
    "symbol": "~",
    "reason": "record_only",
    "reason_text": "only fields that QEMU does not read changed; no restart needed",
    "node": "a",
    "source_node": null,
    "phase": 0,
    "in_place": false,
    "clean_stale": false,
    "migration_mode": null,
    "max_bandwidth": null,
    "memory_mib": 0,
    "changes": [
      {
        "path": "protect",
        "old": false,
        "new": true,
        "forces_restart": false,
        "class": "record"
      }
    ]
  }
]"""


def test_render_json_record_update() -> None:
    """protect added to a running instance: an in-place update of the record, not an empty plan."""
    data = json.loads(render_json(make_plan(desired(changed(WEB, protect=True)), actual(rec(WEB, "a")))))
    assert data["empty"] is False
    shown = json.dumps(data["summary"], indent=2) + "\n" + json.dumps(data["actions"], indent=2)
    assert shown == EXPECTED_UPDATE


def test_render_json_empty_plan() -> None:
    data = json.loads(render_json(make_plan(desired(WEB), actual(rec(WEB, "a")))))
    assert data["empty"] is True
    assert data["actions"] == [] and data["git"] is None
    assert list(data) == ["format_version", "reconciler_version", "git", "prune", "targets", "summary",
                          "empty", "actions", "pending", "orphans", "warnings", "unreachable", "held",
                          "errors"]


def test_capped_migration_carries_its_cap() -> None:
    capped = spec("slow", node="b", migration=Migration(max_bandwidth=4 << 20))
    free = spec("fast", node="b")
    plan = make_plan(desired(capped, free, nodes=(node("a"), node("b"))),
                     actual(rec(spec("slow", node="a"), "a"), rec(spec("fast", node="a"), "a")))
    data = plan_to_dict(plan)
    assert [(a["name"], a["kind"], a["max_bandwidth"]) for a in data["actions"]] == [
        ("fast", "migrate", None), ("slow", "migrate", 4 << 20)]
    assert plan_from_dict(data).actions == plan.actions


@settings(max_examples=150, deadline=None)
@given(worlds(), st.one_of(st.none(), st.booleans()))
def test_json_round_trip(world: tuple[DesiredState, ActualState], prune: bool | None) -> None:
    plan = make_plan(*world, prune=prune)
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan


def test_render_json_handoffs_only_where_a_start_waits() -> None:
    from reconciler.model import Disk

    disks = (Disk("/srv/r.img", boot=True),)
    plan = make_plan(desired(spec("r2", node="a", disks=disks), prune=True),
                     actual(rec(spec("r1", node="a", disks=disks), "a")))
    data = json.loads(render_json(plan))
    assert [(a["name"], a["phase"], a.get("handoffs")) for a in data["actions"]] == [
        ("r1", 0, None), ("r2", 1, [{"instance": "r1", "resource": "disk /srv/r.img"}])]
    assert plan_from_dict(data) == plan
