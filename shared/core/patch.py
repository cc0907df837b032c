"""PATCH bodies, one rule for every service.

- A field left out is unchanged.
- `null` clears a field only where clearing means something (a description, an optional link, a
  setting that falls back to the platform's default); those fields are listed in `clearable`.
- `null` for any other field is a 422 naming the field, never a 500 (a None reaching code that
  needs a value) or a 409 (a None reaching a NOT NULL column).

The OpenAPI schema says the same: only clearable fields admit null.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _only_clearable_fields_admit_null(schema: dict[str, Any], model: type[BaseModel]) -> None:
    clearable: frozenset[str] = getattr(model, "clearable", frozenset())
    for name, prop in schema.get("properties", {}).items():
        variants = prop.get("anyOf")
        if name in clearable or not variants:
            continue
        kept = [variant for variant in variants if variant.get("type") != "null"]
        prop.pop("anyOf")
        prop.pop("default", None)
        if len(kept) == 1:
            prop.update(kept[0])
        else:
            prop["anyOf"] = kept


class PatchBody(BaseModel):
    """Base of every PATCH request body; declare fields `X | None = None` and list in `clearable` those
    that `null` may clear."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_only_clearable_fields_admit_null)

    clearable: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _null_only_where_clearable(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.clearable:
            raise ValueError(f"{info.field_name} cannot be null; leave it out to keep its current value")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields this request gave, with their values (null only for clearable ones)."""
        return self.model_dump(exclude_unset=True)
