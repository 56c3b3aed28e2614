"""The watch daemon (`reconciler watch`): keeps every node's VMs matching a manifest directory.

Modules: triggers (what wakes it), debounce (bursts -> one pass), cache (re-parse only changed files,
last good version of broken ones), assembly (incremental cross-file step), backoff (crash loops),
reconcile (one pass: load, discover, plan, apply), daemon (the loop, signals, shutdown), metrics,
notify (sd_notify), logfmt (one line per event), status (the state file `reconciler status` reads).
"""
