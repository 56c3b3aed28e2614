"""The executor: carries out a Plan on Node objects (start, stop, restart, migrate), with deadlines,
escalation, per-instance ordering, bounded parallelism and crash-safe intents. Entry point: `schedule.run`.

Kept import-light: `reconciler.discovery` reads intents through `executor.intent` (a pure codec).
"""
