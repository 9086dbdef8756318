"""Validate JSON against the schemas of Baseten's OpenAPI spec (3.1, JSON Schema 2020-12)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_URI = "urn:baseten-training-openapi"
_PARAMETER = r"\{[^/{}]+\}"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

#: Operations of the spec that the local service does not implement (cloud-only).
NOT_LOCAL = frozenset(
    {
        ("GET", "/v1/training_projects/{training_project_id}/jobs/{training_job_id}/auth_codes"),
        (
            "PATCH",
            "/v1/training_projects/{training_project_id}/jobs/{training_job_id}"
            "/interactive_sessions/{session_id}",
        ),
        ("POST", "/v1/training_projects/{training_project_id}/jobs/{training_job_id}/ssh/sign"),
    }
)


@dataclass(frozen=True)
class Operation:
    """One operation of the spec: a method on a path template, with its parameters resolved."""

    method: str  # upper case, as on the wire
    template: str
    definition: dict[str, Any] = field(repr=False)
    parameters: tuple[dict[str, Any], ...] = field(repr=False)
    pattern: re.Pattern[str] = field(repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.template

    def query_parameters(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.parameters if p.get("in") == "query"}

    def request_schema(self) -> dict[str, Any] | None:
        body = self.definition.get("requestBody")
        if body is None:
            return None
        schema: dict[str, Any] = body["content"]["application/json"]["schema"]
        return schema

    def response_schema(self, status: int) -> dict[str, Any] | None:
        answer = self.definition.get("responses", {}).get(str(status))
        if answer is None:
            return None
        schema: dict[str, Any] | None = (
            answer.get("content", {}).get("application/json", {}).get("schema")
        )
        return schema


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

    def schema_errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        """Violations of an inline schema of the spec (its local ``$ref``s are resolved)."""
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/") and len(schema) == 1:
            return self.errors(ref.removeprefix("#/components/schemas/"), instance)
        validator = Draft202012Validator(_absolute_refs(schema), registry=self._registry)
        return [_line(e) for e in validator.iter_errors(instance)]

    # ------------------------------------------------------------------ operations

    def operations(self) -> list[Operation]:
        """Every operation of the spec, in the spec's order."""
        found = []
        for template, item in self.spec["paths"].items():
            shared = [self._resolve(p) for p in item.get("parameters", [])]
            literals = re.split(_PARAMETER, template)
            pattern = re.compile("^" + "[^/]+".join(re.escape(s) for s in literals) + "$")
            for method, definition in item.items():
                if method not in HTTP_METHODS:
                    continue
                own = [self._resolve(p) for p in definition.get("parameters", [])]
                names = {(p["name"], p["in"]) for p in own}
                merged = own + [p for p in shared if (p["name"], p["in"]) not in names]
                found.append(
                    Operation(method.upper(), template, definition, tuple(merged), pattern)
                )
        return found

    def match(self, method: str, path: str) -> Operation | None:
        """The operation a concrete request (``GET /v1/training_projects/abc``) is for.

        When several templates match, the one with the most literal text wins (a literal
        segment beats a ``{parameter}``)."""
        candidates = [
            op for op in self.operations() if op.method == method.upper() and op.pattern.match(path)
        ]
        if not candidates:
            return None
        return max(candidates, key=lambda op: len(re.sub(_PARAMETER, "", op.template)))

    def query_errors(self, operation: Operation, query: dict[str, str]) -> list[str]:
        """Query parameters that the operation does not declare or whose value (parsed as
        JSON where it parses, else kept as a string) violates the declared schema."""
        declared = operation.query_parameters()
        errors = []
        for name, raw in query.items():
            if name not in declared:
                errors.append(f"query parameter {name!r} is not declared (has {sorted(declared)})")
                continue
            try:
                value: Any = json.loads(raw)
            except ValueError:
                value = raw
            if isinstance(value, (dict, list)):
                value = raw
            for error in self.schema_errors(declared[name].get("schema", {}), value):
                errors.append(f"query parameter {name}={raw!r}: {error}")
        return errors

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported, not {ref!r}")
        target: Any = self.spec
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        resolved: dict[str, Any] = self._resolve(target)
        return resolved


def _absolute_refs(node: Any) -> Any:
    """``node`` with every ``#/...`` reference made absolute to the spec's URI."""
    if isinstance(node, dict):
        return {
            k: (
                f"{SPEC_URI}{v}"
                if k == "$ref" and isinstance(v, str) and v.startswith("#")
                else _absolute_refs(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_absolute_refs(v) for v in node]
    return node


def _line(error: ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    return f"{where}: {error.message}"
