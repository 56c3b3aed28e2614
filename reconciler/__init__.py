"""reconciler: make QEMU/KVM hosts match the VM manifests kept in git."""

from reconciler import frozenattrs

frozenattrs.install()  # before any of our frozen dataclasses is defined

__version__ = "0.1.0"
