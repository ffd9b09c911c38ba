"""Errors people read: one line naming the file, the field path and what is allowed."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    def __init__(self, source: str, field: str, message: str):
        self.source = source
        self.field = field
        self.message = message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """A YAML file whose top level is a mapping; missing or malformed files raise one-line errors."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "", f"{what} file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise ConfigError(str(path), "", f"not valid YAML ({first})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", f"the top level of a {what} file must be a mapping")
    return data
