"""Pieces several commands share: loading the manifests all-or-nothing."""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.errors import ManifestLoadError
from reconciler.model import DesiredState


def load_desired(paths: Sequence[str], consequence: str) -> DesiredState:
    """The desired state, or ManifestLoadError listing every problem (`consequence`: what is not done).

    plan and apply act on a tree only when all of it is valid, as Terraform does; the watch daemon has
    its finer, per-file rule (reconciler.watch).
    """
    from reconciler import manifest

    result = manifest.load(paths)
    if result.desired is None:
        raise ManifestLoadError(tuple(str(p) for p in result.problems), consequence)
    return result.desired
