"""End-to-end: the metrics page of the real daemon (`reconciler watch`, a subprocess) driving real QEMU
(TCG): per-instance series follow starts, a crash and a prune; every label value is free of whitespace;
the example alert rules name only metrics and labels this page has."""

from __future__ import annotations

import urllib.request

import pytest
import yaml
from conftest import SerialLog
from executor.kit import BOOT_TIMEOUT, World, kill_verified, record_of

from .daemon_kit import Daemon, metric
from .promkit import PROMETHEUS_OWN, rules, samples, selectors

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def page(d: Daemon) -> str:
    assert d.metrics_url is not None
    with urllib.request.urlopen(d.metrics_url, timeout=10) as resp:
        return str(resp.read().decode())


def series_of(text: str, instance: str) -> list[str]:
    return [s.selector() for s in samples(text) if ("instance", instance) in s.labels]


def test_per_instance_series_follow_start_crash_and_prune(world: World, daemons: list[Daemon]) -> None:
    doc = {"apiVersion": "reconciler/v1", "kind": "Defaults", "metadata": {"name": "defaults"},
           "spec": {"prune": True}}
    (world.manifests / "defaults.yaml").write_text(yaml.safe_dump(doc))
    world.instance("vm1", "node-a")
    world.instance("once1", "node-a", runStrategy="Once")
    world.instance("held", "node-b", runStrategy="Halted")
    d = Daemon(world.manifests, "--backoff-base", "2")
    daemons.append(d)
    d.ready()
    d.actions("start", ["vm1", "once1"])
    d.wait("reconcile", where=lambda e: e["actions"] == 0 and e["ok"])
    SerialLog(world.serial_log("node-a", "once1")).wait_for("reconciler-guest: ready once1", BOOT_TIMEOUT)

    m = d.metrics()
    assert metric(m, "reconciler_instance_up", instance="vm1", node="node-a") == 1
    assert metric(m, "reconciler_instance_info", instance="vm1", node="node-a", state="running",
                  run_strategy="Always") == 1
    assert metric(m, "reconciler_instance_info", instance="held", node="node-b", state="absent",
                  run_strategy="Halted") == 1
    assert 'reconciler_instance_up{instance="held",node="node-b"}' in m
    assert metric(m, "reconciler_instance_up", instance="held", node="node-b") == 0
    assert 'reconciler_qemu_exits_total{kind="crash"}' in m  # present at 0 before the first crash
    assert 'reconciler_actions_total{kind="migrate",outcome="failed"}' in m
    assert metric(m, "reconciler_instances", state="stale_pidfile") == 0
    assert any(k.startswith("reconciler_build_info{") for k in m)

    kill_verified(record_of(world, "node-a", "once1").pid, "/instances/once1/")  # Once: stays down
    d.wait("qemu-exit", instance="once1", kind="crash")
    d.wait("reconcile", where=lambda e: "qemu" in e["triggers"])
    text = page(d)
    info = [s for s in samples(text)
            if s.name == "reconciler_instance_info" and ("instance", "once1") in s.labels]
    assert len(info) == 1, info  # the running series is gone
    labels = dict(info[0].labels)
    # SIGKILL: discovery says crashed, or (before issue 11's status fix) stale pidfile, here without the space
    assert labels["state"] in {"crashed", "stale_pidfile"} and labels["run_strategy"] == "Once", labels
    assert metric(d.metrics(), "reconciler_instance_up", instance="once1", node="node-a") == 0
    assert metric(d.metrics(), "reconciler_qemu_exits_total", kind="crash") == 1

    world.remove("vm1")  # pruned: stopped, its record removed, its series gone
    d.action("vm1", "stop", reason="pruned")
    d.wait("reconcile", where=lambda e: e["actions"] == 0)
    text = page(d)
    assert series_of(text, "vm1") == []

    spaced = [(s.name, k, v) for s in samples(text) for k, v in s.labels if any(c.isspace() for c in v)]
    assert spaced == []
    exported: dict[str, set[str]] = {}
    for s in samples(text):
        exported.setdefault(s.name, set()).update(k for k, _ in s.labels)
    for rule in rules():
        for sel in selectors(rule["expr"]):
            if sel.metric not in PROMETHEUS_OWN:
                assert sel.metric in exported, (rule["alert"], sel.metric)
                assert {label for label, _, _ in sel.matchers} <= exported[sel.metric], (rule["alert"], sel)
    assert d.stop() == 0
