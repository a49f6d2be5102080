"""Loading YAML safely: PyYAML's safe loader, bounded, and strict about duplicate keys.

* :class:`BoundedLoader` refuses documents that use more than :data:`MAX_ALIASES` aliases or
  that would expand to more than :data:`MAX_NODES` nodes once every alias is followed (a
  "billion laughs" bomb of nested aliases is small on disk and enormous in use).
* :class:`StrictLoader` also refuses a mapping that gives one key twice (PyYAML silently keeps
  the last one), naming both lines.

Both raise :class:`yaml.MarkedYAMLError` subclasses, so callers report ``file:line`` as for any
YAML error.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_ALIASES = 100  # a config or mapping file needs a handful at most
MAX_NODES = 100_000  # nodes after following every alias


class YamlLimitError(yaml.MarkedYAMLError):
    """The document passes a size limit (aliases, expanded nodes)."""


class BoundedLoader(yaml.SafeLoader):
    """The safe loader with limits on aliases and on the expanded size of the document."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()
                raise YamlLimitError(None, None, f"more than {MAX_ALIASES} aliases (*name): "
                                     "refusing what may be an alias bomb", event.start_mark)
        return super().compose_node(parent, index)

    def get_single_node(self) -> Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node


def _check_expanded_size(root: Node) -> None:
    """Raise if following every alias of ``root`` would visit more than MAX_NODES nodes."""
    sizes: dict[int, int] = {}
    done: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in done:
            continue
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        if not children_done:
            stack.append((node, True))
            stack += [(c, False) for c in children if id(c) not in done]
            continue
        sizes[key] = 1 + sum(sizes[id(c)] for c in children)
        done.add(key)
        if sizes[key] > MAX_NODES:
            raise YamlLimitError(None, None, f"the document expands to more than {MAX_NODES:,} "
                                 "nodes through its aliases: refusing what may be an alias "
                                 "bomb", node.start_mark)


class StrictLoader(BoundedLoader):
    """:class:`BoundedLoader` that also refuses duplicate keys in a mapping."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       f"duplicate key {key!r} (first on line {first})",
                                       key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """One YAML document with :class:`StrictLoader`."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
