"""The applied record: what we started, kept next to the QEMU process in the node's state directory.

A pidfile says only "some process had this PID"; QEMU deletes it on exit. The record (record.json) is the
source of truth for what should exist on a node: the normalized spec and argv we launched, and the PID and
process start time that let discovery prove a live process is ours. It is the "last applied" essence the
planner diffs against. This module is pure: encode and decode only (I/O is in `statedir`).
"""

from __future__ import annotations

import enum
import functools
import json
import sys
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import Any

from reconciler import hotplug, model
from reconciler.actual import StopCause
from reconciler.values import Value

FORMAT_VERSION = 1
MANAGED_BY = "reconciler"


class DecodeError(ValueError):
    """Recorded data does not fit the model; the message names the field."""


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class AppliedRecord(Value):
    """What an instance was started with: the applied record in its state directory."""

    name: str
    node: str
    spec: model.InstanceSpec
    spec_hash: str
    argv: tuple[str, ...]
    qemu_version: str
    pid: int
    create_time: float  # psutil create_time of the QEMU process (epoch seconds)
    started_at: float  # epoch seconds when we launched it
    managed_by: str = MANAGED_BY
    revision: str | None = None  # git revision of the manifests
    stop_cause: StopCause | None = None  # set once the process is gone and we know why
    stopped_at: float | None = None
    format_version: int = FORMAT_VERSION
    # Live changes (executor.live): `spec` is what the guest has now; `boot_spec` what `argv` was built
    # from, once the two differ (None: the same); `plugged` the devices hotplugged since the start.
    boot_spec: model.InstanceSpec | None = None
    plugged: hotplug.Plugged = field(default_factory=hotplug.Plugged)

    @property
    def launched_spec(self) -> model.InstanceSpec:
        """The spec the QEMU process was started with (its argv's)."""
        return self.boot_spec if self.boot_spec is not None else self.spec

    @classmethod
    def create(
        cls, spec: model.InstanceSpec, node: str, argv: tuple[str, ...], qemu_version: str, pid: int,
        create_time: float, started_at: float, revision: str | None = None,
    ) -> AppliedRecord:
        return cls(name=spec.name, node=node, spec=spec, spec_hash=model.spec_hash(spec), argv=tuple(argv),
                   qemu_version=qemu_version, pid=pid, create_time=create_time, started_at=started_at,
                   revision=revision)

    def stopped(self, cause: StopCause, at: float) -> AppliedRecord:
        return replace(self, stop_cause=cause, stopped_at=at)


def to_json(record: AppliedRecord) -> str:
    data = {
        "format_version": record.format_version,
        "managed_by": record.managed_by,
        "name": record.name,
        "node": record.node,
        "spec": model.to_jsonable(record.spec),
        "spec_hash": record.spec_hash,
        "argv": list(record.argv),
        "qemu_version": record.qemu_version,
        "pid": record.pid,
        "create_time": record.create_time,
        "started_at": record.started_at,
        "revision": record.revision,
        "stop_cause": record.stop_cause.value if record.stop_cause else None,
        "stopped_at": record.stopped_at,
    }
    if record.boot_spec is not None:  # only after a live change: older readers never see the keys
        data["boot_spec"] = model.to_jsonable(record.boot_spec)
    if record.plugged != hotplug.Plugged():
        data["plugged"] = model.to_jsonable(record.plugged)
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def from_json(text: str | bytes) -> AppliedRecord:
    """Decode record.json; raises DecodeError (with the field at fault) on anything unexpected."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise DecodeError(f"not JSON: {err}") from None
    if not isinstance(data, dict):
        raise DecodeError("not a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise DecodeError(f"unsupported format_version {version!r} (expected {FORMAT_VERSION})")
    try:
        argv = data["argv"]
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise DecodeError("argv: expected a list of strings")
        cause = data.get("stop_cause")
        return AppliedRecord(
            name=_typed(data, "name", str),
            node=_typed(data, "node", str),
            spec=instance_from_jsonable(data["spec"]),
            spec_hash=_typed(data, "spec_hash", str),
            argv=tuple(argv),
            qemu_version=_typed(data, "qemu_version", str),
            pid=_typed(data, "pid", int),
            create_time=float(_typed(data, "create_time", (int, float))),
            started_at=float(_typed(data, "started_at", (int, float))),
            managed_by=_typed(data, "managed_by", str),
            revision=data.get("revision"),
            stop_cause=StopCause(cause) if cause is not None else None,
            stopped_at=data.get("stopped_at"),
            boot_spec=None if data.get("boot_spec") is None else instance_from_jsonable(data["boot_spec"]),
            plugged=_decode(hotplug.Plugged, data["plugged"], "plugged") if "plugged" in data
            else hotplug.Plugged(),
        )
    except KeyError as err:
        raise DecodeError(f"missing field {err.args[0]}") from None
    except ValueError as err:  # enum values
        raise DecodeError(str(err)) from None


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DecodeError(f"{key}: unexpected value {value!r}")
    return value


def decode_as(tp: Any, data: Any, where: str = "value") -> Any:
    """The inverse of `model.to_jsonable` for any dataclass of ours (an instance of `tp`)."""
    return _decode(tp, data, where)


def instance_from_jsonable(data: Any) -> model.InstanceSpec:
    """The inverse of `model.to_jsonable` for an InstanceSpec (missing fields take their defaults)."""
    spec = _decode(model.InstanceSpec, data, "spec")
    assert isinstance(spec, model.InstanceSpec)
    return spec


def _decode(tp: Any, value: Any, where: str) -> Any:
    return _decoder(tp)(value, where)


Decoder = typing.Callable[[Any, str], Any]


@functools.cache
def _decoder(tp: Any) -> Decoder:
    """The decoding function for values of type `tp`, made once per type: the type's shape is looked at
    here, not for every value (a record decodes some fifty values)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _union_decoder(typing.get_args(tp))
    if origin is tuple:
        return _tuple_decoder(typing.get_args(tp))
    if isinstance(tp, type) and is_dataclass(tp):
        return _dataclass_decoder(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_decoder(tp)
    return _scalar_decoder(tp)


def _union_decoder(args: tuple[Any, ...]) -> Decoder:
    optional = type(None) in args
    (inner,) = [a for a in args if a is not type(None)]
    decode_inner = _decoder(inner)

    def union(value: Any, where: str) -> Any:
        return None if value is None and optional else decode_inner(value, where)
    return union


def _tuple_decoder(args: tuple[Any, ...]) -> Decoder:
    if len(args) == 2 and args[1] is Ellipsis:
        item = _decoder(args[0])

        def homogeneous(value: Any, where: str) -> Any:
            if not isinstance(value, list):
                raise DecodeError(f"{where}: expected a list, got {value!r}")
            return tuple([item(v, f"{where}[{i}]") for i, v in enumerate(value)])
        return homogeneous
    items = [_decoder(a) for a in args]

    def fixed(value: Any, where: str) -> Any:
        if not isinstance(value, list):
            raise DecodeError(f"{where}: expected a list, got {value!r}")
        if len(items) != len(value):
            raise DecodeError(f"{where}: expected {len(items)} items, got {len(value)}")
        return tuple([d(v, f"{where}[{i}]") for i, (d, v) in enumerate(zip(items, value, strict=True))])
    return fixed


def _enum_decoder(tp: type[enum.Enum]) -> Decoder:
    members = tp._value2member_map_

    def member(value: Any, where: str) -> Any:
        try:
            found = members.get(value)
        except TypeError:  # unhashable
            found = None
        if found is None:
            raise DecodeError(f"{where}: {value!r} is not a valid {tp.__name__}")
        return found
    return member


def _scalar_decoder(tp: Any) -> Decoder:
    if tp is float:
        def number(value: Any, where: str) -> Any:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            raise DecodeError(f"{where}: expected float, got {value!r}")
        return number

    def exact(value: Any, where: str) -> Any:
        if tp in (int, str, bool) and type(value) is tp:
            return value
        raise DecodeError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
    return exact


def _field_types(tp: type) -> dict[str, Any]:
    """A dataclass's field types: each class's string annotations evaluated in the module that wrote
    them, as typing.get_type_hints does for ours (at a third of its cost: no ForwardRef objects)."""
    hints: dict[str, Any] = {}
    for cls in reversed(tp.__mro__):
        namespace = vars(sys.modules[cls.__module__])
        # not inspect.get_annotations: inspect stays a stand-in until used (reconciler.lazystdlib)
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
    return hints


def _dataclass_decoder(tp: type) -> Decoder:
    hints = _field_types(tp)
    known = {f.name for f in fields(tp)}
    plan = [(f.name, f.default is MISSING and f.default_factory is MISSING) for f in fields(tp)]
    cache: dict[str, Decoder] = {}

    def dataclass_value(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise DecodeError(f"{where}: expected an object, got {value!r}")
        if not value.keys() <= known:
            raise DecodeError(f"{where}: unknown field {sorted(set(value) - known)[0]!r}")
        kwargs = {}
        for name, required in plan:
            if name in value:
                decode = cache.get(name)
                if decode is None:  # resolved on first use: a field's type may name a class defined later
                    decode = cache[name] = _decoder(hints[name])
                kwargs[name] = decode(value[name], f"{where}.{name}")
            elif required:
                raise DecodeError(f"{where}: missing field {name!r}")
        return tp(**kwargs)
    return dataclass_value
