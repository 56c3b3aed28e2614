"""The NoCloud seed (pure): files, digest and instance-id, exact; its ISO image read back with pycdlib."""

from __future__ import annotations

import io

import pycdlib
import pytest

from reconciler.provision import iso
from reconciler.provision.seed import Seed, SeedSpec, build_seed, seed_digest

USER = "#cloud-config\nusers:\n  - name: ops\n    passwd: $6$salt$hash\n"


def test_generated_meta_data_and_instance_id_from_the_digest() -> None:
    seed = build_seed("web1", SeedSpec(user_data=USER))
    digest = seed_digest(SeedSpec(user_data=USER))
    assert seed == Seed(
        files=(("meta-data", f"instance-id: web1-{digest[:12]}\nlocal-hostname: web1\n".encode()),
               ("user-data", USER.encode())),
        digest=digest, instance_id=f"web1-{digest[:12]}")


@pytest.mark.parametrize(("a", "b"), [
    (SeedSpec(user_data="x"), SeedSpec(user_data="y")),
    (SeedSpec(user_data="x"), SeedSpec(meta_data="x")),  # the same text in another part
    (SeedSpec(user_data="ab", meta_data="c"), SeedSpec(user_data="a", meta_data="bc")),  # boundaries
    (SeedSpec(), SeedSpec(network_config="")),  # absent is not empty
])
def test_different_seeds_have_different_digests(a: SeedSpec, b: SeedSpec) -> None:
    assert seed_digest(a) != seed_digest(b)


def test_a_changed_user_data_changes_the_instance_id_an_unchanged_one_keeps_it() -> None:
    one = build_seed("vm", SeedSpec(user_data="a"))
    assert build_seed("vm", SeedSpec(user_data="a")).instance_id == one.instance_id
    assert build_seed("vm", SeedSpec(user_data="b")).instance_id != one.instance_id


def test_given_meta_data_and_network_config_are_kept_as_written() -> None:
    seed = build_seed("vm", SeedSpec(user_data="u", meta_data="instance-id: mine\n", network_config="n"))
    assert [name for name, _ in seed.files] == ["meta-data", "user-data", "network-config"]
    assert seed.file("meta-data") == b"instance-id: mine\n"
    assert seed.file("network-config") == b"n"


def test_the_iso_is_labelled_cidata_and_holds_the_files_by_their_names() -> None:
    seed = build_seed("vm", SeedSpec(user_data=USER, network_config="version: 2\n"))
    image = iso.seed_iso(seed)
    reader = pycdlib.PyCdlib()
    reader.open_fp(io.BytesIO(image))
    try:
        assert reader.pvd.volume_identifier.decode().strip() == "cidata"
        for name, data in seed.files:
            for where in ({"rr_path": f"/{name}"}, {"joliet_path": f"/{name}"}):
                out = io.BytesIO()
                reader.get_file_from_iso_fp(out, **where)
                assert out.getvalue() == data
    finally:
        reader.close()
