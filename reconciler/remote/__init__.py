"""Remote hosts: a node reached over OpenSSH, with the same `reconciler` package on the far side.

Layout: `protocol` (pure framing of the agent's JSON-lines protocol), `agent` (the far side: `reconciler
agent` on the SSH channel's stdio), `ssh` (the near side: one asyncssh connection per host, the agent
process on it, calls with deadlines, unix-socket forwarding for QMP and the serial console).
"""
