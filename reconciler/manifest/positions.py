"""Line and column of a field, found only when a problem needs them.

Loading keeps plain data, not YAML nodes (cheap for 10,000 documents). When a document has a problem,
its text is composed again and the failing field path is walked through the node tree.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.manifest.yamlsafe import StrictParser


def compose_document(text: str, index: int) -> Node | None:
    """The node tree of document `index` in `text` (None if it cannot be composed)."""
    loader = StrictParser(text)
    try:
        for _ in range(index):
            if not loader.check_node():
                return None
            loader.get_node()
        return loader.get_node() if loader.check_node() else None
    except (yaml.YAMLError, RecursionError):
        return None
    finally:
        loader.dispose()


def locate(root: Node, path: Sequence[str | int]) -> tuple[int, int]:
    """1-based (line, column) of `path` under `root`: a mapping entry's key, a list item, or the deepest
    part of the path that exists."""
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
            break
        node = child
    return mark.line + 1, mark.column + 1


class Locator:
    """Positions in one file's documents, composing each document at most once."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._roots: dict[int, Node | None] = {}

    def find(self, index: int, path: Sequence[str | int]) -> tuple[int, int]:
        if index not in self._roots:
            self._roots[index] = compose_document(self._text, index)
        root = self._roots[index]
        return locate(root, path) if root is not None else (0, 0)
