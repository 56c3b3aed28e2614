"""The executor: carries out a Plan on Node objects (start, stop, restart, migrate), with deadlines,
escalation, per-instance ordering, bounded parallelism and crash-safe intents. Entry point: `schedule.run`.

The intents it writes are encoded in `reconciler.intent`, below it, which discovery reads too.
"""
