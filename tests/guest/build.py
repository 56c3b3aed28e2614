"""Build (once) and cache the tiny Linux guest that every end-to-end test boots under TCG.

Why: end-to-end tests need a real guest that boots in seconds, says when it is ready, shows that it keeps
running (a heartbeat), and powers off on the ACPI power button -- without any image in the tree. We make it
from two Debian packages: the kernel of `linux-image-cloud-amd64` (plus its evdev.ko and button.ko) and
`busybox-static`, packed with rootfs/ (the guest's /init and acpid handler) into a gzip'd newc initramfs.

The result lives OUTSIDE the tree in $RECONCILER_GUEST_DIR (default /var/tmp/reconciler-guest):
`vmlinuz` and `initrd.img` (symlinks through `current` to `builds/<key>/`). The key hashes the package
versions and this directory's build inputs, so a rebuild happens only when one of them changes; a cached
run costs one `apt-cache show` against a persistent package cache (about 10 ms). Builds happen in a temp
dir that is renamed into place, so concurrent builds cannot corrupt the cache.

Usage: python3 tests/guest/build.py      (prints the kernel and initrd paths)
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path("/var/tmp/reconciler-guest")
KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX = "busybox-static"
MODULES = ("kernel/drivers/input/evdev.ko", "kernel/drivers/acpi/button.ko")  # insmod order
HERE = Path(__file__).resolve().parent
ROOTFS = HERE / "rootfs"


class GuestBuildError(Exception):
    """The guest could not be built; str() is the one line to show."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str


@dataclass(frozen=True)
class BuiltGuest:
    kernel: Path
    initrd: Path
    kernel_package: Package
    busybox_package: Package
    key: str


def cache_dir() -> Path:
    return Path(os.environ.get("RECONCILER_GUEST_DIR") or DEFAULT_DIR)


# ---------------------------------------------------------------------------------------------- apt


def _apt_opts(cache: Path) -> list[str]:
    # Debian's docker images disable apt's binary cache, which makes every query rebuild it (~0.4 s);
    # keeping our own makes the cached path fast.
    return ["-o", f"Dir::Cache::pkgcache={cache / 'apt-pkgcache.bin'}", "-o", "Dir::Cache::srcpkgcache="]


def _run(argv: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise GuestBuildError(f"{argv[0]} not found: the guest is built from Debian packages with apt") from e


def _last_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E:")]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1]


def _apt_update() -> None:
    proc = _run(["apt-get", "update", "-q"])
    if proc.returncode != 0:
        raise GuestBuildError(f"apt-get update failed: {_last_error(proc)}")


def parse_show(text: str) -> dict[str, dict[str, str]]:
    """Parse `apt-cache show` stanzas into {package: {field: value}} (first stanza per package wins)."""
    out: dict[str, dict[str, str]] = {}
    for stanza in text.strip().split("\n\n"):
        fields = {m[1]: m[2] for m in re.finditer(r"^([\w-]+): ?(.*)$", stanza, re.MULTILINE)}
        if "Package" in fields:
            out.setdefault(fields["Package"], fields)
    return out


def _show(cache: Path, names: Iterable[str]) -> dict[str, dict[str, str]] | None:
    proc = _run(["apt-cache", *_apt_opts(cache), "show", "--no-all-versions", *names])
    return parse_show(proc.stdout) if proc.returncode == 0 else None


def resolve_packages(cache: Path) -> tuple[Package, Package]:
    """The exact kernel image package (the metapackage's dependency) and busybox-static to use."""
    info = _show(cache, [KERNEL_META, BUSYBOX])
    if info is None or KERNEL_META not in info or BUSYBOX not in info:
        _apt_update()  # a fresh machine has no package lists
        info = _show(cache, [KERNEL_META, BUSYBOX])
    if info is None or KERNEL_META not in info or BUSYBOX not in info:
        raise GuestBuildError(f"apt knows no {KERNEL_META} and {BUSYBOX}: check the apt sources")
    m = re.search(r"(linux-image-[\w.+-]+)\s*\(=\s*([^)\s]+)\)", info[KERNEL_META].get("Depends", ""))
    if m is None:
        raise GuestBuildError(f"{KERNEL_META} does not depend on an exact linux-image-<ver> package")
    return Package(m[1], m[2]), Package(BUSYBOX, info[BUSYBOX]["Version"])


def _download(cache: Path, pkgs: Sequence[Package], dest: Path) -> None:
    argv = ["apt-get", *_apt_opts(cache), "-o", "APT::Sandbox::User=root", "-q", "download"]
    argv += [f"{p.name}={p.version}" for p in pkgs]
    proc = _run(argv, cwd=dest)
    if proc.returncode != 0:  # stale or missing lists: refresh once and retry
        _apt_update()
        proc = _run(argv, cwd=dest)
    if proc.returncode != 0:
        raise GuestBuildError(f"apt-get download failed: {_last_error(proc)}")


def _extract(deb_dir: Path, pkg: Package, dest: Path) -> None:
    debs = [d for d in deb_dir.glob(f"{pkg.name}_*.deb")]
    if len(debs) != 1:
        raise GuestBuildError(f"expected one downloaded {pkg.name} .deb, found {len(debs)}")
    proc = _run(["dpkg-deb", "-x", str(debs[0]), str(dest)])
    if proc.returncode != 0:
        raise GuestBuildError(f"dpkg-deb -x {debs[0].name} failed: {_last_error(proc)}")


# -------------------------------------------------------------------------------------------- cpio


class NewcWriter:
    """Minimal writer of the `newc` cpio format the kernel unpacks as an initramfs."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        self._ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self._buf.write(hdr + b"\0" * (-len(hdr) % 4))
        self._buf.write(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()


def _module_bytes(kroot: Path, rel: str) -> bytes:
    """A kernel module's bytes, decompressing a .ko.xz if the package ships them compressed."""
    (moddir,) = (kroot / "lib/modules").iterdir()
    plain, xz = moddir / rel, moddir / (rel + ".xz")
    if plain.is_file():
        return plain.read_bytes()
    if xz.is_file():
        return lzma.decompress(xz.read_bytes())
    raise GuestBuildError(f"kernel package has no {rel} (nor {rel}.xz) under {moddir}")


def make_initramfs(busybox: bytes, modules: Sequence[tuple[str, bytes]]) -> bytes:
    """The gzip'd newc initramfs: busybox, /init and acpid handler from rootfs/, the given modules."""
    w = NewcWriter()
    for d in ("bin", "dev", "proc", "sys", "tmp", "var", "var/log", "lib", "lib/modules"):
        w.dir(d)
    w.chardev("dev/console", 5, 1)  # so /init has stdio before devtmpfs is mounted
    w.file("bin/busybox", busybox, 0o755)
    w.symlink("bin/sh", "busybox")  # the rest come from `busybox --install -s` in /init
    for path in sorted(ROOTFS.rglob("*")):
        rel = path.relative_to(ROOTFS).as_posix()
        if path.is_dir():
            w.dir(rel)
        else:
            w.file(rel, path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644)
    for name, data in modules:
        w.file(f"lib/modules/{name}", data)
    return gzip.compress(w.finish(), compresslevel=6, mtime=0)


# ------------------------------------------------------------------------------------------- cache


def inputs_hash() -> str:
    """Hash of everything in this directory that shapes the guest (this script and rootfs/)."""
    h = hashlib.sha256()
    for path in sorted([Path(__file__).resolve(), *ROOTFS.rglob("*")]):
        if path.is_file():
            h.update(path.relative_to(HERE).as_posix().encode() + b"\0")
            h.update(b"x" if os.access(path, os.X_OK) else b"-")
            h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(kernel: Package, busybox: Package) -> str:
    text = f"{kernel.name}={kernel.version}\n{busybox.name}={busybox.version}\n{inputs_hash()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build_into(cache: Path, kernel: Package, busybox: Package, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="work.", dir=cache) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        _download(cache, [kernel, busybox], work)
        kroot, broot = work / "kernel", work / "busybox"
        _extract(work, kernel, kroot)
        _extract(work, busybox, broot)
        vmlinuz = sorted((kroot / "boot").glob("vmlinuz-*"))
        if len(vmlinuz) != 1:
            raise GuestBuildError(f"{kernel.name} ships {len(vmlinuz)} vmlinuz files, expected one")
        shutil.copyfile(vmlinuz[0], out / "vmlinuz")
        mods = [(Path(rel).name, _module_bytes(kroot, rel)) for rel in MODULES]
        (out / "initrd.img").write_bytes(make_initramfs((broot / "bin/busybox").read_bytes(), mods))


def _publish(cache: Path, key: str) -> None:
    """Point `current` at builds/<key> atomically; vmlinuz and initrd.img link through it."""
    tmp_link = cache / f".current.{os.getpid()}"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(f"builds/{key}")
    os.replace(tmp_link, cache / "current")
    for name in ("vmlinuz", "initrd.img"):
        link = cache / name
        if not link.is_symlink():
            tmp = cache / f".{name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(f"current/{name}")
            os.replace(tmp, link)


STALE_SECONDS = 3600.0


def _prune(cache: Path, keep: str) -> None:
    """Remove builds (and crashed staging dirs) of other keys untouched for an hour: each is ~15 MB."""
    now = time.time()
    for entry in (cache / "builds").iterdir():
        with contextlib.suppress(OSError):
            if entry.name != keep and now - entry.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(entry)


def _build_atomically(cache: Path, kernel: Package, busybox: Package, final: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        _build_into(cache, kernel, busybox, staging)
        meta = {"kernel": [kernel.name, kernel.version], "busybox": [busybox.name, busybox.version]}
        (staging / "build.json").write_text(json.dumps(meta, indent=1) + "\n")
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, final)
        except OSError:  # a concurrent build won the race: use its (identical) result
            if not (final / "build.json").is_file():
                raise
    except OSError as e:
        raise GuestBuildError(f"building the guest into {final} failed: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_guest(cache: Path | None = None) -> BuiltGuest:
    """Return the cached guest, building it first if its key (versions + inputs) is not cached yet."""
    cache = cache or cache_dir()
    try:
        (cache / "builds").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GuestBuildError(f"cannot create guest cache dir {cache}: {e.strerror}") from e
    kernel, busybox = resolve_packages(cache)
    key = cache_key(kernel, busybox)
    final = cache / "builds" / key
    if not (final / "build.json").is_file():
        _build_atomically(cache, kernel, busybox, final)
    current = cache / "current"
    if not current.is_symlink() or os.readlink(current) != f"builds/{key}":
        _publish(cache, key)
        _prune(cache, keep=key)
    return BuiltGuest(final / "vmlinuz", final / "initrd.img", kernel, busybox, key)


def main() -> int:
    try:
        g = ensure_guest()
    except GuestBuildError as e:
        print(f"guest build: error: {e}", file=sys.stderr)
        return 1
    print(f"kernel: {g.kernel}\ninitrd: {g.initrd}\n({g.kernel_package.name} {g.kernel_package.version}, "
          f"{g.busybox_package.name} {g.busybox_package.version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
