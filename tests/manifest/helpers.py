"""Small builders for manifest tests: valid documents to start from, and a tree writer."""

from __future__ import annotations

from pathlib import Path

from reconciler import manifest

NODE_A = """\
apiVersion: reconciler/v1
kind: Node
metadata:
  name: node-a
spec:
  stateDir: /var/lib/reconciler/node-a
  accelerator: tcg
  migrationPorts: {first: 49152, last: 49183}
"""

NODE_B = """\
apiVersion: reconciler/v1
kind: Node
metadata:
  name: node-b
spec:
  stateDir: /var/lib/reconciler/node-b
  accelerator: tcg
  migrationPorts: {first: 49184, last: 49215}
"""


def instance(
    name: str = "web1", node: str = "node-a", mac: str = "52:54:00:00:00:01", extra: str = ""
) -> str:
    """A valid Instance document; `extra` is appended under spec (indent it by two spaces)."""
    return f"""\
apiVersion: reconciler/v1
kind: Instance
metadata:
  name: {name}
spec:
  node: {node}
  memory: 128M
  nics:
    - mac: "{mac}"
      mode: user
{extra}"""


def write_tree(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def problem_lines(paths: list[str]) -> list[str]:
    """The problems of loading `paths`, as printed; asserts the result is consistent."""
    result = manifest.load(paths)
    assert (result.desired is None) == bool(result.problems)
    return [str(p) for p in result.problems]
