"""Write a NoCloud seed as an ISO 9660 image labelled `cidata`, the way cloud-init finds it.

pycdlib (pure Python) builds the image in memory: no genisoimage subprocess, no temporary directory of
seed files (which could hold secrets) and no shell. The image is written atomically with mode 0600,
because user-data may hold password hashes and keys.
"""

from __future__ import annotations

import io

import pycdlib

from reconciler import statedir
from reconciler.provision.seed import Seed

VOLUME_ID = "cidata"
# Like genisoimage's default -pad: 150 sectors of zeros at the end. Without it, a guest's CD-ROM driver
# reading ahead past the image's last sector fails the mount (seen with Linux's sr + isofs).
PAD = 150 * 2048


def seed_iso(seed: Seed) -> bytes:
    """The ISO image of `seed` (Joliet and Rock Ridge names, so `meta-data` keeps its dash)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_ID)
    try:
        for index, (name, data) in enumerate(seed.files):
            iso.add_fp(io.BytesIO(data), len(data), f"/F{index}.;1", rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue() + bytes(PAD)
    finally:
        iso.close()


def write_seed_iso(path: str, seed: Seed) -> None:
    """Write the seed image at `path` (0600, atomically: a reader sees the old image or the new one)."""
    statedir.atomic_write(path, seed_iso(seed))
