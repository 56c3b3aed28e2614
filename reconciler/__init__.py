"""reconciler: make QEMU/KVM hosts match the VM manifests kept in git."""

from reconciler import lazystdlib, regexcode

lazystdlib.defer()  # before dataclasses is imported (by classcode, just below)
regexcode.install()  # before the modules whose import compiles a regular expression

from reconciler import classcode, frozenattrs  # noqa: E402

# Before any of our dataclasses is defined: their generated methods cost less to make (see each module).
classcode.install()
frozenattrs.install()

__version__ = "0.1.0"
