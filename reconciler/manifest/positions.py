"""Line and column of a field, found only when a problem needs them.

Loading keeps plain data, not YAML nodes (cheap for 10,000 documents). When a document has a problem,
its file is composed again (once, whatever the number of problems) and the failing field path is walked
through the node tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # yaml is imported only when a position is asked for
    from yaml.error import Mark
    from yaml.nodes import Node


def compose_documents(text: str) -> list[Node | None]:
    """The node trees of all documents in `text`, as far as they can be composed."""
    import yaml

    from reconciler.manifest.yamlsafe import StrictParser

    roots: list[Node | None] = []
    loader = StrictParser(text)
    try:
        while loader.check_node():
            roots.append(loader.get_node())
    except (yaml.YAMLError, RecursionError):
        pass
    finally:
        loader.dispose()
    return roots


def locate(root: Node, path: Sequence[str | int]) -> tuple[int, int]:
    """1-based (line, column) of `path` under `root`: a mapping entry's key, a list item, or the deepest
    part of the path that exists."""
    mark, _ = _walk(root, path)
    return mark.line + 1, mark.column + 1


def locate_exact(root: Node, path: Sequence[str | int]) -> tuple[int, int] | None:
    """1-based (line, column) of `path` under `root` when the whole path exists there; None otherwise."""
    mark, complete = _walk(root, path)
    return (mark.line + 1, mark.column + 1) if complete else None


def _walk(root: Node, path: Sequence[str | int]) -> tuple[Mark, bool]:
    """The mark of the deepest part of `path` that exists under `root`, and whether all of it does."""
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    node = root
    mark = root.start_mark
    for part in path:
        child: Node | None = None
        if isinstance(node, MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.value == part:
                    mark, child = key.start_mark, value
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
            mark = child.start_mark
        if child is None:
            return mark, False
        node = child
    return mark, True


class Locator:
    """Positions in one file's documents, composing the file at most once (and only if asked)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._roots: list[Node | None] | None = None

    def find(self, index: int, path: Sequence[str | int]) -> tuple[int, int]:
        if self._roots is None:
            # only documents that loaded are located, so the text already passed the nesting check
            self._roots = compose_documents(self._text)
        root = self._roots[index] if index < len(self._roots) else None
        return locate(root, path) if root is not None else (0, 0)
