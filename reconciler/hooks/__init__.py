"""Executables QEMU runs on our behalf (tap `script=`). Kept free of non-stdlib imports: they may run
under a system python3 that does not have this package's dependencies."""
