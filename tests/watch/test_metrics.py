"""The daemon's metrics (pure parts, exact): per-instance series and their removal, counters present at
0 from the start, no whitespace in any label value; and the example alert rules in contrib/prometheus:
valid, referring only to what the daemon exports, and firing (promtool) on the exporter's real output."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from reconciler import __version__
from reconciler.actual import ActualInstance, ActualState, RunState
from reconciler.model import DesiredState, InstanceSpec, RunStrategy
from reconciler.watch.metrics import Metrics, instance_series, label_value

from .promkit import ALERTS, PROMETHEUS_OWN, promtool, rules, run_promtool, samples, selectors, series_over


def inst(name: str, node: str, state: RunState) -> ActualInstance:
    return ActualInstance(name=name, node=node, state=state, spec=None)


def desired(*specs: tuple[str, str, RunStrategy]) -> DesiredState:
    return DesiredState(
        instances={n: InstanceSpec(name=n, memory_mib=128, node=node, run_strategy=rs)
                   for n, node, rs in specs},
        nodes={})


def page(m: Metrics) -> str:
    return generate_latest(m.registry).decode()


def values(m: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {s.labels: s.value for s in samples(page(m)) if s.name == name}


def test_instance_series_table() -> None:
    actual = ActualState(instances=(
        inst("web", "a", RunState.RUNNING),
        inst("db", "b", RunState.CRASHED),
        inst("old", "a", RunState.STALE),  # no longer declared
        inst("mig", "a", RunState.POSTMIGRATE), inst("mig", "b", RunState.RUNNING),  # two records
    ))
    want = desired(("web", "a", RunStrategy.ALWAYS), ("db", "b", RunStrategy.RERUN_ON_FAILURE),
                   ("mig", "b", RunStrategy.ALWAYS), ("new", "b", RunStrategy.HALTED))
    info, up = instance_series(actual, want)
    assert info == {
        ("web", "a", "running", "Always"), ("db", "b", "crashed", "RerunOnFailure"),
        ("old", "a", "stale_pidfile", ""), ("mig", "a", "postmigrate", "Always"),
        ("mig", "b", "running", "Always"), ("new", "b", "absent", "Halted"),
    }
    assert up == {("web", "a"): 1, ("db", "b"): 0, ("old", "a"): 0, ("mig", "a"): 0, ("mig", "b"): 1,
                  ("new", "b"): 0}
    assert instance_series(actual, None)[1].keys() == {("web", "a"), ("db", "b"), ("old", "a"), ("mig", "a"),
                                                       ("mig", "b")}


def test_series_of_gone_instances_and_old_states_are_removed() -> None:
    m = Metrics()
    want = desired(("web", "a", RunStrategy.ALWAYS), ("db", "a", RunStrategy.ALWAYS))
    both = ActualState((inst("web", "a", RunState.RUNNING), inst("db", "a", RunState.RUNNING)))
    m.set_instance_series(both, want)
    m.set_instance_series(ActualState((inst("web", "b", RunState.RUNNING),)),  # web migrated, db gone
                          desired(("web", "b", RunStrategy.ALWAYS)))
    assert values(m, "reconciler_instance_up") == {(("instance", "web"), ("node", "b")): 1}
    assert values(m, "reconciler_instance_info") == {
        (("instance", "web"), ("node", "b"), ("run_strategy", "Always"), ("state", "running")): 1}
    m.set_instance_series(ActualState((inst("web", "b", RunState.CRASHED),)),
                          desired(("web", "b", RunStrategy.ALWAYS)))
    assert values(m, "reconciler_instance_up") == {(("instance", "web"), ("node", "b")): 0}
    assert values(m, "reconciler_instance_info") == {
        (("instance", "web"), ("node", "b"), ("run_strategy", "Always"), ("state", "crashed")): 1}


def test_counters_start_at_zero_for_every_known_label_value() -> None:
    m = Metrics()
    got = {(s.name, s.labels) for s in samples(page(m)) if s.name.endswith("_total") and s.value == 0}
    for result in ("ok", "error"):
        assert ("reconciler_reconcile_total", (("result", result),)) in got
    for kind in ("start", "stop", "restart", "migrate"):
        for outcome in ("done", "failed", "skipped"):
            assert ("reconciler_actions_total", (("kind", kind), ("outcome", outcome))) in got
    assert not any(labels == (("kind", "noop"), ("outcome", "done")) for _, labels in got)
    for source in ("startup", "file", "qemu", "resync", "sighup", "backoff", "followup"):
        assert ("reconciler_triggers_total", (("source", source),)) in got
    for kind in ("guest-poweroff", "guest-panicked", "stopped-by-host", "crash"):
        assert ("reconciler_qemu_exits_total", (("kind", kind),)) in got


def test_build_info() -> None:
    assert values(Metrics(), "reconciler_build_info") == {
        (("python", platform.python_version()), ("version", __version__)): 1}


def populated() -> Metrics:
    """A registry with every state, strategy and revision form the daemon can report."""
    m = Metrics()
    actual = ActualState(tuple(inst(f"i{n}", "node-a", state) for n, state in enumerate(RunState)))
    strategies = [(f"i{n}", "node-a", rs) for n, rs in enumerate(RunStrategy)]
    m.set_instances(i.state for i in actual.instances)
    m.set_instance_series(actual, desired(*strategies, ("never", "node-b", RunStrategy.ALWAYS)))
    m.set_revision("0123abc-dirty")
    return m


def test_no_whitespace_in_any_label_value() -> None:
    m = populated()
    m.set_revision("with a space\n")  # not a form git gives; made safe all the same
    found = [(s.name, k, v) for s in samples(page(m)) for k, v in s.labels if any(c.isspace() for c in v)]
    assert found == []
    assert values(m, "reconciler_instances")[(("state", "stale_pidfile"),)] == 1
    assert values(m, "reconciler_applied_revision_info") == {(("revision", "with_a_space"),): 1}
    assert label_value(" a \t b\n") == "a_b"


def test_alert_rules_are_valid_yaml_with_the_expected_shape() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    assert list(doc) == ["groups"]
    names = [r["alert"] for r in rules()]
    assert {"ReconcilerDown", "ReconcilerInstanceDown", "ReconcilerReconcileFailing",
            "ReconcilerCrashLoop"} <= set(names)
    assert len(names) == len(set(names))
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule
        assert rule["annotations"]["summary"], rule


def test_alert_rules_refer_only_to_exported_metrics_labels_and_values() -> None:
    exported = samples(page(populated()))
    by_name: dict[str, set[tuple[str, str]]] = {}
    for s in exported:
        by_name.setdefault(s.name, set()).update(s.labels)
    checked = 0
    for rule in rules():
        for sel in selectors(rule["expr"]):
            if sel.metric in PROMETHEUS_OWN:
                continue
            assert sel.metric in by_name, f"{rule['alert']}: {sel.metric} is not exported"
            pairs = by_name[sel.metric]
            for label, op, value in sel.matchers:
                assert label in {k for k, _ in pairs}, f"{rule['alert']}: {sel.metric} has no label {label}"
                if op in ("=", "!="):
                    assert (label, value) in pairs, f"{rule['alert']}: {sel.metric} {label}={value!r} never"
            checked += 1
    assert checked >= 7


needs_promtool = pytest.mark.skipif(promtool() is None, reason="promtool (Debian package prometheus) "
                                         "is not installed; set PROMTOOL=/path/to/promtool")


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    done = run_promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def without_annotations(tmp_path: Path) -> Path:
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@needs_promtool
def test_instance_down_fires_for_the_vms_that_should_run(tmp_path: Path) -> None:
    """The exporter's real output for a pass, held 20 minutes: InstanceDown names exactly the VMs whose
    run strategy wants them up; the other alerts stay quiet, then ActionsFailing fires on one failure."""
    m = Metrics()
    actual = ActualState((
        inst("web", "a", RunState.RUNNING), inst("crashy", "a", RunState.CRASHED),
        inst("rerun-crashed", "b", RunState.CRASHED), inst("rerun-off", "b", RunState.STOPPED),
        inst("manual", "a", RunState.STOPPED), inst("halted", "a", RunState.STOPPED),
        inst("paused", "b", RunState.PAUSED),
    ))
    m.set_instance_series(actual, desired(
        ("web", "a", RunStrategy.ALWAYS), ("crashy", "a", RunStrategy.ALWAYS),
        ("rerun-crashed", "b", RunStrategy.RERUN_ON_FAILURE),
        ("rerun-off", "b", RunStrategy.RERUN_ON_FAILURE),
        ("manual", "a", RunStrategy.MANUAL), ("halted", "a", RunStrategy.HALTED),
        ("paused", "b", RunStrategy.ALWAYS), ("never", "b", RunStrategy.ALWAYS),
        ("once", "a", RunStrategy.ONCE)))
    first = page(m)
    m.actions.labels(kind="start", outcome="failed").inc()
    second = page(m)
    series = series_over([(first, 20), (second, 20)])
    for s in series:  # a pass completed "now" at every step: 60 s apart, from the promtool epoch
        if s["series"].startswith("reconciler_last_success_timestamp_seconds"):
            s["values"] = "0+60x40"
    down = [{"exp_labels": {"job": "reconciler", "instance": name, "node": node, "severity": "critical"}}
            for name, node in (("crashy", "a"), ("never", "b"), ("paused", "b"), ("rerun-crashed", "b"))]
    failing = [{"exp_labels": {"job": "reconciler", "instance": "127.0.0.1:9109", "kind": "start",
                               "outcome": "failed", "severity": "warning"}}]
    quiet = ["ReconcilerReconcileFailing", "ReconcilerCrashLoop", "ReconcilerManifestErrors",
             "ReconcilerDown"]
    test = {"rule_files": [str(without_annotations(tmp_path))], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [*series, {"series": 'up{instance="127.0.0.1:9109",job="reconciler"}',
                                   "values": "1x40"}],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "ReconcilerInstanceDown", "exp_alerts": down},
            {"eval_time": "4m", "alertname": "ReconcilerInstanceDown", "exp_alerts": []},  # `for: 5m`
            {"eval_time": "10m", "alertname": "ReconcilerActionsFailing", "exp_alerts": []},
            {"eval_time": "25m", "alertname": "ReconcilerActionsFailing", "exp_alerts": failing},
            *({"eval_time": "30m", "alertname": a, "exp_alerts": []} for a in quiet),
        ]}]}
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    done = run_promtool("test", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
