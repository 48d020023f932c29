"""YAML files read safely: no code runs, a key given twice is refused, any problem is one line."""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any, ClassVar

import yaml

from search.base.errors import UsageError

_MERGE = "tag:yaml.org,2002:merge"
# YAML 1.2's core schema: what a plain (unquoted) scalar is; anything else is a string.
# YAML 1.1's extras are strings here: yes/no/on/off, base-60 (1:30), 1_000, 0b1, '=', dates.
_CORE = (
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", "~nN"),
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("tag:yaml.org,2002:int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
     "-+.0123456789"),
)


def _core_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)  # "010" is ten, as YAML 1.2 reads it, not eight


class _CoreLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` reading YAML 1.2's core schema only: null, booleans, integers,
    floats, strings, lists and mappings. No other tag (``!!timestamp``, ``!!binary``, ``!!set``),
    no merge key (``<<``), no alias (``*name``), and a key given twice in one mapping is refused."""

    yaml_implicit_resolvers: ClassVar[dict] = {}
    yaml_constructors: ClassVar[dict] = {
        tag: yaml.SafeLoader.yaml_constructors[tag]
        for tag in ("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float",
                    "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")
    } | {"tag:yaml.org,2002:int": _core_int, None: yaml.SafeLoader.construct_undefined}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """Refuse an alias: ten nested ones make 10**10 values from a few lines (billion laughs)."""
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not supported; write the value out",
                self.peek_event().start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE or (
                isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<" and key_node.style is None
            ):
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<) are not supported; write each key once", key_node.start_mark
                )
            key = self.construct_object(key_node)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a name, not a list or mapping", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


for _tag, _pattern, _first in _CORE:
    _CoreLoader.add_implicit_resolver(_tag, re.compile(rf"^(?:{_pattern})$"), list(_first))
_CoreLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])


class _Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes a string any reader could take for another type: YAML
    1.1's forms (``yes``, ``1:30``) as PyYAML already does, and 1.2 core's too (``1e5``, ``0o17``)."""

    yaml_implicit_resolvers: ClassVar[dict] = {
        first: list(resolvers) for first, resolvers in yaml.SafeDumper.yaml_implicit_resolvers.items()
    }

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a value used twice is written twice: read_yaml refuses aliases


for _tag, _pattern, _first in _CORE:
    _Dumper.add_implicit_resolver(_tag, re.compile(rf"^(?:{_pattern})$"), list(_first))


def yaml_text(document: Any) -> str:
    """``document`` as YAML that reads back the same with ``read_yaml`` and with ``yaml.safe_load``."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=False)


def _kind(exc: Exception) -> str:
    return "boolean" if isinstance(exc, KeyError) else "number"


def read_yaml(path: Path, missing: str = "config file not found") -> Any:
    """A YAML file's content, read safely; any problem is a one-line ``UsageError``."""
    try:
        if path.is_dir():
            raise UsageError(f"{path}: a folder, not a file")
        if path.exists() and not path.is_file():  # a device or a pipe may never end
            raise UsageError(f"{path}: not a regular file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: {missing}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (not UTF-8)") from None
    if "\0" in text:
        raise UsageError(f"{path}: not a text file (binary)")
    try:
        loader = _CoreLoader(text)  # a SafeLoader: no code runs
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except RecursionError:
        raise UsageError(f"{path}: not valid YAML (nested too deeply)") from None
    except yaml.MarkedYAMLError as exc:
        where = f" on line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise UsageError(f"{path}: not valid YAML ({exc.problem}{where})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (ValueError, KeyError, OverflowError) as exc:  # ``!!int abc``, ``!!bool maybe``, 5,000 digits
        raise UsageError(f"{path}: not valid YAML (a value that is no {_kind(exc)}: {exc})") from None
