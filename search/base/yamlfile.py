"""YAML files read safely: no code runs, a key given twice is refused, any problem is one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from search.base.errors import UsageError


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


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
        loader = _UniqueKeyLoader(text)  # a SafeLoader: no code runs
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
