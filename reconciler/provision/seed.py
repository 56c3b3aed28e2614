"""A cloud-init NoCloud seed: its files, its digest and the instance-id derived from it. Pure.

cloud-init re-runs its per-instance modules when the instance-id changes. Deriving the id from the seed's
content (name + digest) means an edited user-data takes effect at the next boot, and an unchanged one
never re-provisions the guest. The digest is also what plans and logs show: user-data may hold password
hashes and keys, so its text is never printed.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.digest import sha256
from reconciler.model import CloudInit
from reconciler.values import Value

DIGEST_CHARS = 12  # of the sha256 hex digest, in the instance-id


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class SeedSpec(Value):
    """What the manifest gives, as text (inline or read from the files next to it)."""

    user_data: str | None = None
    meta_data: str | None = None  # None: instance-id and local-hostname are generated
    network_config: str | None = None


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Seed(Value):
    """The seed's files (name -> bytes), in a fixed order, and its digest."""

    files: tuple[tuple[str, bytes], ...]
    digest: str  # sha256 hex of the files as given, before the generated meta-data
    instance_id: str

    def file(self, name: str) -> bytes | None:
        return next((data for n, data in self.files if n == name), None)


def seed_spec(cloud_init: CloudInit) -> SeedSpec:
    """The seed's text parts of a spec's cloudInit (files already read into it by the manifest loader)."""
    return SeedSpec(cloud_init.user_data, cloud_init.meta_data, cloud_init.network_config)


def build_seed(name: str, spec: SeedSpec) -> Seed:
    """The NoCloud files for instance `name`: user-data, meta-data, and network-config when given."""
    digest = seed_digest(spec)
    instance_id = f"{name}-{digest[:DIGEST_CHARS]}"
    meta = spec.meta_data if spec.meta_data is not None else \
        f"instance-id: {instance_id}\nlocal-hostname: {name}\n"
    files: list[tuple[str, bytes]] = [
        ("meta-data", meta.encode()),
        ("user-data", (spec.user_data if spec.user_data is not None else "#cloud-config\n").encode()),
    ]
    if spec.network_config is not None:
        files.append(("network-config", spec.network_config.encode()))
    return Seed(tuple(files), digest, instance_id)


def seed_digest(spec: SeedSpec) -> str:
    """sha256 over every part, each length-prefixed, so no two different seeds share a digest."""
    h = sha256(b"reconciler-nocloud-seed-v1\0")
    for part in (spec.user_data, spec.meta_data, spec.network_config):
        if part is None:
            h.update(b"-\0")
        else:
            data = part.encode()
            h.update(f"{len(data)}\0".encode())
            h.update(data)
    return str(h.hexdigest())
