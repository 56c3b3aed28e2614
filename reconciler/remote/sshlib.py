"""asyncssh, imported without the warning that cryptography 51 prints at every import of it.

asyncssh (2.24) names cryptography's DSA key classes when it is imported, and cryptography 51 deprecated
DSA with a warning on that access: a UserWarning, which Python shows by default, so every command that
reaches a remote host would print it, though no key of ours is DSA and the user can do nothing about it.
It is ignored here, for asyncssh's own modules and this message only; any other warning still shows.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="DSA is deprecated", category=UserWarning, module=r"asyncssh\.")
    import asyncssh

__all__ = ["asyncssh"]
