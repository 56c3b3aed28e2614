"""Images the reconciler creates, with the real qemu-img: overlays that never write their base, blank
disks of the asked size, hostile paths, and deletion that only ever removes the very file we created."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.provision import images
from reconciler.provision.imagecheck import ImageQuery
from reconciler.provision.images import ImageError, ImageFormat

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) missing")]

MiB = 1024 * 1024


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qemu_io(path: Path, command: str, fmt: str = "qcow2") -> None:
    subprocess.run(["qemu-io", "-f", fmt, "-c", command, str(path)], check=True, capture_output=True)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base,with=commas.raw"  # hostile: QEMU option syntax inside the name
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), "32M"], check=True)
    qemu_io(path, "write -P 0x11 0 1M", "raw")
    return path


def test_an_overlay_reads_its_base_and_never_writes_it(tmp_path: Path, base: Path) -> None:
    before = sha256(base)
    info = asyncio.run(images.check_base(str(base)))
    assert (info.format, info.virtual_size) == ("raw", 32 * MiB)
    overlay = tmp_path / "vm1,x=y.qcow2"
    owned = asyncio.run(images.create_overlay(str(overlay), str(base), ImageFormat.RAW))
    assert owned.base == str(base) and owned.path == str(overlay)
    assert oct(overlay.stat().st_mode & 0o777) == "0o600"
    got = asyncio.run(images.inspect(str(overlay)))
    assert (got.format, got.virtual_size, got.backing) == ("qcow2", 32 * MiB, str(base))
    qemu_io(overlay, "read -P 0x11 0 1M")  # the base's data shows through
    qemu_io(overlay, "write -P 0x22 0 1M")
    qemu_io(overlay, "read -P 0x22 0 1M")
    assert sha256(base) == before  # the write went to the overlay


def test_a_blank_disk_has_the_asked_size(tmp_path: Path) -> None:
    path = tmp_path / "data.qcow2"
    owned = asyncio.run(images.create_blank(str(path), 64 * MiB, ImageFormat.QCOW2))
    assert owned.size == 64 * MiB
    assert asyncio.run(images.inspect(str(path))).virtual_size == 64 * MiB


def test_an_existing_file_is_never_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "mine.qcow2"
    mine.write_bytes(b"the user's data")
    with pytest.raises(ImageError, match="already exists; an existing file is never replaced"):
        asyncio.run(images.create_blank(str(mine), MiB, ImageFormat.QCOW2))
    assert mine.read_bytes() == b"the user's data"
    assert [p.name for p in tmp_path.iterdir()] == ["mine.qcow2"]  # no temporary file left


def test_a_failed_create_names_the_image_not_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "big.qcow2"
    with pytest.raises(ImageError) as info:
        asyncio.run(images.create_blank(str(target), -1, ImageFormat.QCOW2))  # qemu-img refuses the size
    assert str(info.value).startswith(f"disk image {target}: ")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_missing_or_unusable_base_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"^disk image .*/nope\.qcow2: .*No such file"):
        asyncio.run(images.check_base(str(tmp_path / "nope.qcow2")))
    with pytest.raises(ImageError, match="must be an absolute path"):
        asyncio.run(images.check_base("relative.qcow2"))
    vmdk = tmp_path / "b.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "1M"], check=True)
    with pytest.raises(ImageError, match="a base image must be raw or qcow2, not vmdk"):
        asyncio.run(images.check_base(str(vmdk)))


def test_delete_removes_only_the_very_file_we_created(tmp_path: Path) -> None:
    path = tmp_path / "owned.qcow2"
    owned = asyncio.run(images.create_blank(str(path), MiB, ImageFormat.QCOW2))
    # Another file swapped in at the path: refused, untouched.
    os.rename(path, tmp_path / "moved.qcow2")
    path.write_bytes(b"someone else's")
    with pytest.raises(ImageError, match="no longer the file the reconciler created; not deleted"):
        images.delete_owned(owned)
    assert path.read_bytes() == b"someone else's"
    # A symlink swapped in (even to the original file): refused, the target untouched.
    path.unlink()
    path.symlink_to(tmp_path / "moved.qcow2")
    with pytest.raises(ImageError, match="is now a symlink"):
        images.delete_owned(owned)
    assert (tmp_path / "moved.qcow2").exists()
    # The original file back in place: deleted; deleting again is fine.
    path.unlink()
    os.rename(tmp_path / "moved.qcow2", path)
    images.delete_owned(owned)
    assert not path.exists()
    images.delete_owned(owned)


def test_ownership_records_round_trip_and_refuse_garbage(tmp_path: Path) -> None:
    owned = asyncio.run(images.create_blank(str(tmp_path / "d.raw"), MiB, ImageFormat.RAW))
    record = tmp_path / "state" / "owned.json"
    images.write_owned(str(record), owned)
    assert images.owned_from_json(record.read_bytes()) == owned
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ImageError, match="unreadable ownership record"):
        images.owned_from_json(b'{"format_version": 2}')


def test_provision_makes_an_overlay_of_the_base_format_and_records_it(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    record = tmp_path / "state" / "images" / "r.json"
    overlay = tmp_path / "vm.qcow2"
    owned = asyncio.run(images.provision(str(record), "vm", str(overlay), base=str(base), size=None,
                                         fmt=ImageFormat.QCOW2))
    assert owned is not None and images.read_owned(str(record)) == owned and owned.instance == "vm"
    raw = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(overlay)], check=True,
                                    capture_output=True, text=True).stdout)
    assert (raw["backing-filename"], raw["backing-filename-format"]) == (str(base), "qcow2")
    assert asyncio.run(images.provision(str(record), "vm", str(overlay), base=str(base), size=None,
                                        fmt=ImageFormat.QCOW2)) is None  # there now: used as it is


def _qemu_img_info(path: Path) -> tuple[str, int]:
    raw = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                                    capture_output=True, text=True).stdout)
    return str(raw["format"]), int(raw["virtual-size"])


# (file name, qemu-img create options, whether this process decides it without qemu-img)
PROBE_CASES = [
    pytest.param("b.raw", ["-f", "raw"], True, id="raw"),
    pytest.param("b.qcow2", ["-f", "qcow2"], True, id="qcow2"),
    pytest.param("b-v2.qcow2", ["-f", "qcow2", "-o", "compat=0.10"], True, id="qcow2_v2"),
    pytest.param("b.vmdk", ["-f", "vmdk"], False, id="vmdk"),
    pytest.param("b.vpc", ["-f", "vpc"], False, id="vpc"),
    pytest.param("b.vdi", ["-f", "vdi"], False, id="vdi"),
    pytest.param("b.vhdx", ["-f", "vhdx"], False, id="vhdx"),
    pytest.param("b.qed", ["-f", "qed"], False, id="qed"),
    pytest.param("b.dmg", ["-f", "raw"], False, id="raw_named_dmg"),
]


@pytest.mark.parametrize(("name", "options", "decided"), PROBE_CASES)
def test_the_in_process_probe_agrees_with_qemu_img_or_leaves_it_to_qemu_img(
        tmp_path: Path, name: str, options: list[str], decided: bool) -> None:
    from reconciler.provision import baseprobe

    path = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", *options, str(path), "24M"], check=True)
    probed = baseprobe.probe(str(path))
    assert (probed is not None) is decided
    if probed is not None:
        assert probed == _qemu_img_info(path)


def test_a_base_with_a_backing_file_a_data_file_or_a_text_start_is_left_to_qemu_img(
        tmp_path: Path, base: Path) -> None:
    from reconciler.provision import baseprobe

    chained = tmp_path / "chained.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(chained)],
                   check=True)
    assert baseprobe.probe(str(chained)) is None
    assert asyncio.run(images.check_base(str(chained))) == images.ImageInfo("qcow2", 32 * MiB, str(base))
    data_file = tmp_path / "with-data-file.qcow2"  # its data in another file the header names
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}",
                    str(data_file), "8M"], check=True)
    assert baseprobe.probe(str(data_file)) is None
    descriptor = tmp_path / "desc.img"  # what a vmdk text descriptor may start with
    descriptor.write_bytes(b"# Disk DescriptorFile\nversion=1\n".ljust(4096, b"\0"))
    assert baseprobe.probe(str(descriptor)) is None
    tiny = tmp_path / "tiny.raw"
    tiny.write_bytes(b"\1" * 100)
    assert baseprobe.probe(str(tiny)) is None


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_base_a_running_qemu_writes_is_refused_by_the_plan_and_again_at_creation(
        tmp_path: Path, fmt: str, qemu_binary: str) -> None:
    base = tmp_path / f"busy.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(base), "16M"], check=True)
    overlay = tmp_path / "vm.qcow2"
    record = tmp_path / "state" / "images" / "r.json"
    # A QEMU that holds the base as a writable disk (not started: -S; the image is opened and locked).
    writer = subprocess.Popen([qemu_binary, "-nodefaults", "-machine", "pc,accel=tcg", "-S", "-display",
                               "none", "-qmp", "stdio",
                               "-blockdev", f"driver=file,node-name=f0,filename={base}",
                               "-blockdev", f"driver={fmt},node-name=d0,file=f0",
                               "-device", "virtio-blk-pci,drive=d0"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert writer.stdin is not None and writer.stdout is not None and b"QMP" in writer.stdout.readline()
        writer.stdin.write(b'{"execute": "qmp_capabilities"}\n')
        writer.stdin.flush()  # answered from the main loop: the devices, the disk's, exist by then
        assert b'"return"' in writer.stdout.readline()
        checked = asyncio.run(images.check_for_create([ImageQuery(str(overlay), str(base))]))
        assert checked[str(overlay)].error == (
            f"base image: disk image {base}: is being written by a running QEMU; a base image must not be "
            "written (stop its writer, or copy it)")
        with pytest.raises(ImageError, match=r"is being written by a running QEMU"):
            asyncio.run(images.provision(str(record), "vm", str(overlay), base=str(base), size=None,
                                         fmt=ImageFormat.QCOW2))
        assert not overlay.exists() and not record.exists()
    finally:
        writer.kill()
        writer.communicate()  # reaped, its pipes closed
    assert asyncio.run(images.provision(str(record), "vm", str(overlay), base=str(base), size=None,
                                        fmt=ImageFormat.QCOW2)) is not None  # the writer gone: usable


def test_offline_growth_writes_only_the_very_image_the_reconciler_created(tmp_path: Path) -> None:
    record = tmp_path / "state" / "images" / "r.json"
    mine = tmp_path / "mine.raw"
    asyncio.run(images.provision(str(record), "vm", str(mine), base=None, size=16 * MiB, fmt=ImageFormat.RAW))
    asyncio.run(images.grow_recorded(str(record), str(mine), 24 * MiB, ImageFormat.RAW))
    assert mine.stat().st_size == 24 * MiB

    theirs = tmp_path / "theirs.raw"  # the user's own image, named by a disk entry with `size`
    theirs.write_bytes(b"\1" * MiB)
    with pytest.raises(ImageError, match=r"theirs\.raw: was not created by the reconciler, so it is never "
                                         r"written outside of QEMU: it grows live only"):
        asyncio.run(images.grow_recorded(str(tmp_path / "state" / "images" / "none.json"), str(theirs),
                                         24 * MiB, ImageFormat.RAW))
    assert theirs.read_bytes() == b"\1" * MiB

    mine.rename(tmp_path / "moved.raw")  # a symlink swapped in for the owned image: refused
    mine.symlink_to(theirs)
    with pytest.raises(ImageError, match="is now a symlink, not the image the reconciler created; not grown"):
        asyncio.run(images.grow_recorded(str(record), str(mine), 32 * MiB, ImageFormat.RAW))
    assert theirs.stat().st_size == MiB
