"""Errors people read: one line naming the file, the field path and what is allowed."""

from __future__ import annotations


class ConfigError(ValueError):
    def __init__(self, source: str, field: str, message: str):
        self.source = source
        self.field = field
        self.message = message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")
