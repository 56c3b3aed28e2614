"""What a running QEMU has plugged, read over QMP: for the live update, which converges on it, and for
discovery, which tells what a live change killed halfway left behind (hotplug.leftovers).

One place for the queries, so the two never read QEMU differently. The answers are parsed by the pure
views (devplug.DeviceView, hotplug.SizeView); this module only asks.
"""

from __future__ import annotations

from typing import Any

from reconciler import devplug, hotplug
from reconciler.errors import QmpError
from reconciler.qmp import QmpSession


async def read_devices(s: QmpSession, timeout: float) -> devplug.DeviceView:
    pci = await s.execute("query-pci", timeout=timeout)
    block = await s.execute("query-block", timeout=timeout)
    named = await s.execute("query-named-block-nodes", {"flat": True}, timeout=timeout)
    network = await s.execute("human-monitor-command", {"command-line": "info network"}, timeout=timeout)
    return devplug.DeviceView.from_replies(pci, block, named, network)


async def read_sizes(s: QmpSession, timeout: float) -> hotplug.SizeView:
    summary = await s.execute("query-memory-size-summary", timeout=timeout)
    devices = await s.execute("query-memory-devices", timeout=timeout)
    slots = await s.execute("query-hotpluggable-cpus", timeout=timeout)
    cpus = await s.execute("query-cpus-fast", timeout=timeout)
    memdevs = await s.execute("query-memdev", timeout=timeout)
    try:
        balloon = balloon_actual(await s.execute("query-balloon", timeout=timeout))
    except QmpError:  # DeviceNotActive: started without maxMemory
        balloon = None
    return hotplug.SizeView.from_replies(summary, devices, slots, cpus, memdevs, balloon)


def balloon_actual(data: Any) -> int | None:
    """The balloon's `actual` bytes in a query-balloon answer or a BALLOON_CHANGE event's data."""
    value = data.get("actual") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
