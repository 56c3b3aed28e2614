"""reconciler: make QEMU/KVM hosts match the VM manifests kept in git."""

__version__ = "0.1.0"
