"""The local secret store: what a SecretReference resolves to on this machine.

Values live in one JSON file readable by this user only (0600). They are never printed,
never returned by the API, and the runner redacts them from stored logs. A file that is
not a JSON object of strings is refused with one line naming it (and never overwritten:
the other secrets in it would be lost).
"""

from __future__ import annotations

import json
import re

from bt_jupyter import limits
from bt_jupyter.errors import SecretStoreError
from bt_jupyter.local.home import Home, write_private

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_secret(name: str, value: str) -> None:
    """A ValueError naming what is wrong with a secret to store (the value is never shown):
    the value becomes an environment variable, so it has that one's bounds."""
    if not _NAME.fullmatch(name) or name in (".", "..") or len(name) > limits.MAX_NAME_CHARS:
        raise ValueError(
            f"secret name {limits.shown(name)}: use 1 to {limits.MAX_NAME_CHARS} letters, "
            "digits, '.', '_' and '-'"
        )
    if not value:
        raise ValueError(f"secret {name!r}: the value is empty")
    if "\0" in value:
        raise ValueError(
            f"secret {name!r}: the value holds a NUL character, which no environment variable can"
        )
    if len(value) > limits.MAX_ENV_VALUE_CHARS:
        raise ValueError(
            f"secret {name!r}: the value has {len(value):,} characters; at most "
            f"{limits.MAX_ENV_VALUE_CHARS:,} fit in an environment variable"
        )


class SecretStore:
    def __init__(self, home: Home) -> None:
        self.path = home.secrets_file
        home.ensure()

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_bytes().decode("utf-8")
            data = json.loads(text) if text.strip() else {}
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise self._corrupt(
                f"is not valid JSON (line {exc.lineno} column {exc.colno})"
            ) from None
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise self._corrupt("is not valid JSON") from None
        except OSError as exc:
            raise SecretStoreError(
                f"cannot read the secrets file {self.path}: {exc.strerror}"
            ) from None
        if not isinstance(data, dict):
            raise self._corrupt(f"holds a JSON {type(data).__name__}, not an object")
        if not all(isinstance(v, str) for v in data.values()):
            raise self._corrupt("has a value that is not a string")
        return data

    def _corrupt(self, what: str) -> SecretStoreError:
        # the message never quotes the file: it holds secret values
        return SecretStoreError(
            f"the secrets file {self.path} {what}: fix it, or move it away and set the "
            "secrets again with `bt-jupyter secrets set NAME`"
        )

    def names(self) -> list[str]:
        return sorted(self._read())

    def get(self, name: str) -> str | None:
        return self._read().get(name)

    def set(self, name: str, value: str) -> None:
        check_secret(name, value)
        data = self._read()
        data[name] = value
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True))

    def delete(self, name: str) -> bool:
        data = self._read()
        if data.pop(name, None) is None:
            return False
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True))
        return True
