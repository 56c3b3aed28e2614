"""Build (once) and cache the tiny Linux guest that every end-to-end test boots under TCG.

Why: end-to-end tests need a real guest that boots in seconds, says when it is ready, shows that it keeps
running (a heartbeat), powers off on the ACPI power button, and reports what it sees (memory, CPUs, disks,
NICs, a cloud-init seed) and runs qemu-guest-agent, so that provisioning and live-change tests can prove
their effect from the guest's own view -- without any image in the tree. We make it from Debian packages:
the kernel of `linux-image-cloud-amd64` (plus the modules below), `busybox-static`, and `qemu-guest-agent`
with the shared libraries its ELF needs (DT_NEEDED, recursively, from its Depends closure), packed with
rootfs/ (/init and its helpers) into a gzip'd newc initramfs.

Kernel command-line switches (read by /init):
    reconciler.tag=XYZ        the ready line says "reconciler-guest: ready XYZ"
    reconciler.ignore_acpi=1  no acpid: the ACPI power button is ignored (the agent still works)
    swiotlb=1024              (kernel) needed at 128 MiB with memory-hotplug room (-m ...,maxmem=): QEMU puts
                              that area above 4 GiB and the kernel would reserve a 64 MiB bounce buffer

Serial console lines, in this order (ttyS0; tests/conftest.py parses them):
    reconciler-guest: ready [TAG]      acpid holds the power button (unless ignored); device modules next
    reconciler-guest: report mem_kib=<MemTotal> cpus=<online> blk=<name:bytes,...> nics=<name:mac,...>
                                       once the device modules are loaded, then whenever it changes (a
                                       uevent wakes /init at once; each tick checks too) and on request:
                                       a line "report" typed on the console prints it even if unchanged.
                                       blk leaves out loop/ram devices; nics leaves out lo.
    reconciler-guest: wrote DEV WORD   after a line "write DEV WORD" typed on the console: WORD and a
                                       newline written at the start of /dev/DEV and fsync'ed to the host
                                       ("reconciler-guest: write failed DEV" otherwise)
    reconciler-guest: seed instance-id=<ID> user-data-sha256=<HEX> device=<dev>
                                       if an ISO9660 filesystem labelled `cidata` (NoCloud) is there: it is
                                       mounted read-only; ID is meta-data's instance-id, HEX the user-data's
    reconciler-guest: agent started on <vportNpM>
                                       qemu-ga runs on the virtio-serial port named org.qemu.guest_agent.0
                                       (at boot, or when hotplugged later)
    reconciler-guest: tick N           once a second
    reconciler-guest: power button, powering off     acpid's handler (etc/acpi/PWRF/00000080)
    reconciler-guest: agent shutdown, powering off   guest-shutdown (qemu-ga runs our sbin/shutdown);
                                       "..., halting" / "..., rebooting" for its halt and reboot modes

Hotplug: added memory is onlined by the kernel (auto_online_blocks); added CPUs by the uevent handler
(etc/reconciler/uevent, run by busybox `uevent` for each netlink event). Modules: the cloud kernel has
virtio PCI, block, net, console, balloon and SCSI, the PIIX IDE CD-ROM (`pc`'s `-cdrom`; it has no AHCI, so
on q35 attach a seed through virtio-scsi) and ISO9660 as modules; their load order comes from each module's
`depends=`. Memory (pc-dimm), CPU and PCI hotplug are built in.

The result lives OUTSIDE the tree in $RECONCILER_GUEST_DIR (default /var/tmp/reconciler-guest):
`vmlinuz` and `initrd.img` (symlinks through `current` to `builds/<key>/`). The key hashes the package
versions and this directory's build inputs, so a rebuild happens only when one of them changes; a cached
run costs one `apt-cache show` against a persistent package cache. Builds happen in a temp dir that is
renamed into place, so concurrent builds cannot corrupt the cache. A cold build downloads ~30 MB.

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
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path("/var/tmp/reconciler-guest")
KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX = "busybox-static"
AGENT = "qemu-guest-agent"
AGENT_BINARY = "usr/sbin/qemu-ga"
# The agent's library packages as of Debian 12, asked for in the same `apt-cache show` as the rest so that a
# cached run stays one query; the closure is still computed from the Depends fields (see `_closure`).
AGENT_LIB_HINTS = (
    "libc6", "libgcc-s1", "gcc-12-base", "libglib2.0-0", "libffi8", "libmount1", "libblkid1", "libpcre2-8-0",
    "libselinux1", "zlib1g", "libnuma1", "libudev1", "liburing2",
)  # fmt: skip
# Modules insmod'ed before the ready line (the ACPI power button) and after it (devices: virtio PCI, block,
# net, console/serial ports, balloon, SCSI; the CD-ROM on `pc`'s PIIX IDE; ISO9660). Their dependencies come
# from each module's .modinfo `depends=`, so only the roots are listed here. Memory, CPU and PCI hotplug
# (ACPI_HOTPLUG_MEMORY/CPU, HOTPLUG_PCI_ACPI/PCIE) are built into the cloud kernel and need nothing.
BOOT_MODULES = ("evdev", "button")
DEVICE_MODULES = (
    "virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio_balloon", "virtio_scsi",
    "ata_piix", "sr_mod", "isofs",
)  # fmt: skip
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")
HERE = Path(__file__).resolve().parent
ROOTFS = HERE / "rootfs"


class GuestBuildError(Exception):
    """The guest could not be built; str() is the one line to show."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str


@dataclass(frozen=True)
class Packages:
    """Everything the guest is made of: the kernel image, busybox, the agent and its libraries' packages."""

    kernel: Package
    busybox: Package
    agent: tuple[Package, ...]  # qemu-guest-agent first, then its Depends closure (sorted)

    @property
    def all(self) -> tuple[Package, ...]:
        return (self.kernel, self.busybox, *self.agent)


@dataclass(frozen=True)
class BuiltGuest:
    kernel: Path
    initrd: Path
    kernel_package: Package
    busybox_package: Package
    key: str
    agent_packages: tuple[Package, ...] = ()


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


def _depends(fields: dict[str, str]) -> list[str]:
    """Package names in a Depends field: the first of each alternative, without version or arch."""
    names = []
    for clause in fields.get("Depends", "").split(","):
        first = clause.split("|")[0].strip()
        if first:
            names.append(re.split(r"[\s(:]", first, maxsplit=1)[0])
    return names


def _closure(cache: Path, info: dict[str, dict[str, str]], root: str) -> dict[str, dict[str, str]]:
    """root's Depends closure from `apt-cache show` stanzas, asking apt for any package info lacks."""
    seen: dict[str, dict[str, str]] = {}
    todo = [root]
    while todo:
        missing = sorted({n for n in todo if n not in info})
        if missing:
            info.update(_show(cache, missing) or {})
            if lost := [n for n in missing if n not in info]:
                raise GuestBuildError(f"apt knows no {', '.join(lost)} (needed by {root})")
        nxt = []
        for name in todo:
            if name not in seen:
                seen[name] = info[name]
                nxt += [d for d in _depends(info[name]) if d not in seen]
        todo = nxt
    return seen


def resolve_packages(cache: Path) -> Packages:
    """The exact kernel image package (the metapackage's dependency), busybox-static, and the agent's set."""
    wanted = [KERNEL_META, BUSYBOX, AGENT, *AGENT_LIB_HINTS]
    info = _show(cache, wanted)
    if info is None or not {KERNEL_META, BUSYBOX, AGENT} <= info.keys():
        _apt_update()  # a fresh machine has no package lists
        info = _show(cache, wanted)
    if info is None or not {KERNEL_META, BUSYBOX, AGENT} <= info.keys():
        raise GuestBuildError(f"apt knows no {KERNEL_META}, {BUSYBOX} and {AGENT}: check the apt sources")
    m = re.search(r"(linux-image-[\w.+-]+)\s*\(=\s*([^)\s]+)\)", info[KERNEL_META].get("Depends", ""))
    if m is None:
        raise GuestBuildError(f"{KERNEL_META} does not depend on an exact linux-image-<ver> package")
    closure = _closure(cache, info, AGENT)
    agent = [Package(AGENT, closure.pop(AGENT)["Version"])]
    agent += [Package(n, f["Version"]) for n, f in sorted(closure.items())]
    return Packages(Package(m[1], m[2]), Package(BUSYBOX, info[BUSYBOX]["Version"]), tuple(agent))


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
    debs = list(deb_dir.glob(f"{pkg.name}_*.deb"))
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


# --------------------------------------------------------------------------------------------- ELF


def elf_sections(data: bytes) -> dict[str, tuple[int, bytes, int]]:
    """{name: (sh_type, contents, sh_link)} of a little-endian ELF64 file (a .ko, a shared object)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise GuestBuildError("not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = []
    for i in range(shnum):
        name, typ, _fl, _ad, off, size, link = struct.unpack_from("<IIQQQQI", data, shoff + i * shentsize)
        raw.append((name, typ, data[off : off + size] if typ != 8 else b"", link))  # 8: SHT_NOBITS
    names = raw[shstrndx][2]
    return {names[n : names.index(b"\0", n)].decode(): (t, c, lk) for n, t, c, lk in raw}


def _cstr(table: bytes, offset: int) -> str:
    return table[offset : table.index(b"\0", offset)].decode()


def elf_needed(data: bytes) -> list[str]:
    """The DT_NEEDED sonames of a dynamically linked ELF64 file."""
    sections = elf_sections(data)
    by_index = list(sections.values())
    for typ, dynamic, link in by_index:
        if typ == 6:  # SHT_DYNAMIC; its sh_link is the string table
            strtab = by_index[link][1]
            tags = struct.iter_unpack("<qQ", dynamic)
            return [_cstr(strtab, val) for tag, val in tags if tag == 1]  # DT_NEEDED
    return []


def modinfo_depends(ko: bytes) -> list[str]:
    """The `depends=` of a kernel module's .modinfo section."""
    info = elf_sections(ko).get(".modinfo", (0, b"", 0))[1]
    for field in info.split(b"\0"):
        if field.startswith(b"depends="):
            return [d for d in field[len(b"depends=") :].decode().split(",") if d]
    return []


# ------------------------------------------------------------------------------------ kernel modules


def _read_module(path: Path) -> bytes:
    """A kernel module's bytes, decompressing a .ko.xz if the package ships them compressed."""
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def _module_index(kroot: Path) -> dict[str, Path]:
    """{module name: file} for every module the kernel package ships (`-` in file names reads as `_`)."""
    (moddir,) = (kroot / "lib/modules").iterdir()
    index = {}
    for path in moddir.rglob("*.ko*"):
        name = path.name.split(".ko")[0].replace("-", "_")
        index[name] = path
    return index


def module_load_order(
    roots: Sequence[str], depends: Callable[[str], Sequence[str]], loaded: Iterable[str] = ()
) -> list[str]:
    """roots and their dependencies, each after everything it depends on, leaving out `loaded` ones."""
    order: list[str] = []
    done = set(loaded)
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            raise GuestBuildError(f"kernel module dependency cycle through {name}")
        visiting.add(name)
        for dep in depends(name):
            visit(dep)
        visiting.discard(name)
        done.add(name)
        order.append(name)

    for root in roots:
        visit(root)
    return order


def collect_modules(kroot: Path) -> tuple[list[str], list[str], dict[str, bytes]]:
    """(boot load order, device load order, {name: bytes}) resolved from the kernel package's modules."""
    index = _module_index(kroot)
    cache: dict[str, bytes] = {}

    def data(name: str) -> bytes:
        if name not in index:
            raise GuestBuildError(f"kernel package has no module {name} (built in? check /boot/config-*)")
        if name not in cache:
            cache[name] = _read_module(index[name])
        return cache[name]

    def deps(name: str) -> list[str]:
        return modinfo_depends(data(name))

    boot = module_load_order(BOOT_MODULES, deps)
    devices = module_load_order(DEVICE_MODULES, deps, loaded=boot)
    return boot, devices, cache


# -------------------------------------------------------------------------------- agent + libraries


def _find_lib(root: Path, soname: str) -> Path | None:
    for d in LIB_DIRS:
        candidate = root / d / soname
        if candidate.is_file() or candidate.is_symlink():
            return _resolve_in(root, candidate)
    return None


def _resolve_in(root: Path, path: Path) -> Path:
    """Follow symlinks as if root were /, never leaving root (absolute links in .debs point at /)."""
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = os.readlink(path)
        path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
    raise GuestBuildError(f"symlink loop at {path}")


def collect_agent(root: Path) -> dict[str, bytes]:
    """{initramfs path: bytes}: qemu-ga, its DT_NEEDED libraries (recursively) and the ELF interpreter."""
    binary = root / AGENT_BINARY
    if not binary.is_file():
        raise GuestBuildError(f"{AGENT} ships no {AGENT_BINARY}")
    files = {AGENT_BINARY: binary.read_bytes()}
    interp = elf_sections(files[AGENT_BINARY]).get(".interp", (0, b"", 0))[1].rstrip(b"\0").decode()
    todo = [*elf_needed(files[AGENT_BINARY]), *([Path(interp).name] if interp else [])]
    while todo:
        soname = todo.pop()
        dest = f"lib/x86_64-linux-gnu/{soname}"
        if dest in files:
            continue
        found = _find_lib(root, soname)
        if found is None:
            raise GuestBuildError(f"{AGENT} needs {soname}, which no package of its Depends closure ships")
        files[dest] = found.read_bytes()
        todo += elf_needed(files[dest])
    return files


# --------------------------------------------------------------------------------------- initramfs


@dataclass(frozen=True)
class Contents:
    """What goes into the initramfs besides rootfs/."""

    busybox: bytes
    boot_modules: Sequence[str]  # insmod order, before the ready line
    device_modules: Sequence[str]  # insmod order, after it
    modules: dict[str, bytes]  # name -> .ko bytes
    agent: dict[str, bytes]  # path -> bytes: qemu-ga and its libraries


BASE_DIRS = (
    "bin", "sbin", "dev", "proc", "sys", "tmp", "run", "mnt", "var", "var/log", "lib", "lib/modules",
    "lib/x86_64-linux-gnu", "lib64", "usr", "usr/sbin",
)  # fmt: skip


def make_initramfs(c: Contents) -> bytes:
    """The gzip'd newc initramfs: busybox, rootfs/ (/init and its helpers), the modules, the agent."""
    w = NewcWriter()
    dirs = set(BASE_DIRS)
    for d in BASE_DIRS:
        w.dir(d)
    w.chardev("dev/console", 5, 1)  # so /init has stdio before devtmpfs is mounted
    w.symlink("var/run", "../run")
    w.file("bin/busybox", c.busybox, 0o755)
    w.symlink("bin/sh", "busybox")  # the rest come from `busybox --install -s` in /init
    for path in sorted(ROOTFS.rglob("*")):
        rel = path.relative_to(ROOTFS).as_posix()
        if path.is_dir():
            if rel not in dirs:
                w.dir(rel)
        else:
            w.file(rel, path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644)
    for name in [*c.boot_modules, *c.device_modules]:
        w.file(f"lib/modules/{name}.ko", c.modules[name])
    w.file("lib/modules/boot.order", "".join(f"{n}\n" for n in c.boot_modules).encode())
    w.file("lib/modules/devices.order", "".join(f"{n}\n" for n in c.device_modules).encode())
    for name, data in sorted(c.agent.items()):
        w.file(name, data, 0o755)
    for name in c.agent:
        if name.startswith("lib/x86_64-linux-gnu/ld-linux"):  # the ELF interpreter's path is /lib64/...
            w.symlink(f"lib64/{Path(name).name}", f"/{name}")
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


def cache_key(pkgs: Packages) -> str:
    text = "".join(f"{p.name}={p.version}\n" for p in pkgs.all) + inputs_hash()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build_into(cache: Path, pkgs: Packages, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="work.", dir=cache) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        _download(cache, pkgs.all, work)
        kroot, broot, aroot = work / "kernel", work / "busybox", work / "agent"
        _extract(work, pkgs.kernel, kroot)
        _extract(work, pkgs.busybox, broot)
        for pkg in pkgs.agent:  # one tree, as installed: libraries find each other by soname
            _extract(work, pkg, aroot)
        vmlinuz = sorted((kroot / "boot").glob("vmlinuz-*"))
        if len(vmlinuz) != 1:
            raise GuestBuildError(f"{pkgs.kernel.name} ships {len(vmlinuz)} vmlinuz files, expected one")
        shutil.copyfile(vmlinuz[0], out / "vmlinuz")
        boot, devices, modules = collect_modules(kroot)
        busybox = (broot / "bin/busybox").read_bytes()
        contents = Contents(busybox, boot, devices, modules, collect_agent(aroot))
        (out / "initrd.img").write_bytes(make_initramfs(contents))


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
    """Remove builds (and crashed staging dirs) of other keys unused for an hour: each is ~18 MB."""
    now = time.time()
    for entry in (cache / "builds").iterdir():
        with contextlib.suppress(OSError):
            if entry.name != keep and now - entry.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(entry)


def _build_atomically(cache: Path, pkgs: Packages, final: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        _build_into(cache, pkgs, staging)
        meta = {
            "kernel": [pkgs.kernel.name, pkgs.kernel.version],
            "busybox": [pkgs.busybox.name, pkgs.busybox.version],
            "agent": [[p.name, p.version] for p in pkgs.agent],
        }
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
    pkgs = resolve_packages(cache)
    key = cache_key(pkgs)
    final = cache / "builds" / key
    if not (final / "build.json").is_file():
        _build_atomically(cache, pkgs, final)
    else:  # mark it used: another checkout's build prunes only builds unused for STALE_SECONDS
        with contextlib.suppress(OSError):
            os.utime(final)
    current = cache / "current"
    if not current.is_symlink() or os.readlink(current) != f"builds/{key}":
        _publish(cache, key)
        _prune(cache, keep=key)
    return BuiltGuest(final / "vmlinuz", final / "initrd.img", pkgs.kernel, pkgs.busybox, key, pkgs.agent)


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
