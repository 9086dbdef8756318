"""The local secret store: what a SecretReference resolves to on this machine.

Values live in one JSON file readable by this user only (0600). They are never printed,
never returned by the API, and the runner redacts them from stored logs.
"""

from __future__ import annotations

import json
import re

from bt_jupyter.local.home import Home, write_private

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class SecretStore:
    def __init__(self, home: Home) -> None:
        self.path = home.secrets_file
        home.ensure()

    def _read(self) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return data

    def names(self) -> list[str]:
        return sorted(self._read())

    def get(self, name: str) -> str | None:
        return self._read().get(name)

    def set(self, name: str, value: str) -> None:
        if not _NAME.match(name):
            raise ValueError(
                f"secret name {name!r} may contain only letters, digits, '.', '_' and '-'"
            )
        if not value:
            raise ValueError(f"secret {name!r}: the value is empty")
        data = self._read()
        data[name] = value
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True))

    def delete(self, name: str) -> bool:
        data = self._read()
        if data.pop(name, None) is None:
            return False
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True))
        return True
