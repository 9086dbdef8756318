"""Validate JSON against the schemas of Baseten's OpenAPI spec (3.1, JSON Schema 2020-12)."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_URI = "urn:baseten-training-openapi"


class OpenAPI:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)

    @property
    def schema_names(self) -> set[str]:
        return set(self.spec["components"]["schemas"])

    def errors(self, schema_name: str, instance: Any) -> list[str]:
        """Every violation of ``#/components/schemas/<schema_name>``, as readable lines."""
        if schema_name not in self.schema_names:
            raise KeyError(f"{schema_name} is not a schema of the spec")
        schema = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
        validator = Draft202012Validator(schema, registry=self._registry)
        return [_line(e) for e in validator.iter_errors(instance)]

    def validate(self, schema_name: str, instance: Any) -> None:
        errors = self.errors(schema_name, instance)
        if errors:
            raise AssertionError(f"{schema_name}: " + "; ".join(errors))


def _line(error: ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    return f"{where}: {error.message}"
