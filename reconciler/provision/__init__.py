"""Guest provisioning: disk images the reconciler creates and cloud-init NoCloud seeds (issue 14).

`seed` is pure (the seed's files and its instance-id); `iso` writes a seed as an ISO 9660 image;
`images` creates qcow2 overlays and blank disks with qemu-img and keeps the ownership records that decide
what may ever be deleted.
"""
