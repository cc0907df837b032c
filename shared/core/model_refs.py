"""Naming a model version, the one way every service takes it.

A request names a version in one of three forms, all resolved here inside one project:
- `{"model_version_id": "<uuid>"}`
- `{"model": "churn", "version": 3}`  (a registered model's name and version number)
- `{"model": "churn", "alias": "champion"}`  (the version an alias points at now)

Path forms (`/api/v1/model-versions/{version_ref}`) take the same three as one string: the UUID,
`churn:3` or `churn@champion` (model names hold no `:` and aliases no `@`). A name is looked up in the
caller's default project: the API key's, the X-Tessera-Project header's, or the organization's `default`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field, StringConstraints, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.core.errors import InvalidParameter, NotFound
from shared.db.models import Model, ModelAlias, ModelVersion

ModelNameRef = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^/:\x00]+$")]
# The three forms `VersionRef.parse` reads: a UUID, `<model>:<version>` (a model name has no `:`), `<model>@<alias>`.
VERSION_REF_PATTERN = (
    r"^([0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
    r"|[^/:@\x00]+:0*[1-9][0-9]*|[^/\x00]+@[^@/\x00]+)$"
)
AliasRef = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^@/\x00]+$")]


@dataclass(frozen=True)
class VersionRef:
    version_id: uuid.UUID | None = None
    model: str | None = None
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version_id is not None:
            return str(self.version_id)
        return f"{self.model}:{self.version}" if self.version is not None else f"{self.model}@{self.alias}"

    @classmethod
    def parse(cls, text: str) -> VersionRef:
        """The path form: a UUID, `name:3` or `name@alias`."""
        try:
            return cls(version_id=uuid.UUID(text))
        except ValueError:
            pass
        if "@" in text:
            model, alias = text.rsplit("@", 1)
            if model and alias:
                return cls(model=model, alias=alias)
        elif ":" in text:
            model, number = text.rsplit(":", 1)
            # ASCII digits only: str.isdigit() also takes '²', which int() refuses.
            if model and number.isascii() and number.isdigit() and int(number) >= 1:
                return cls(model=model, version=int(number))
        raise InvalidParameter(
            f"'{text}' does not name a model version: give its id, '<model>:<version>' or '<model>@<alias>'"
        )


class VersionRefFields(BaseModel):
    """Request fields naming one model version: `model_version_id`, or `model` with `version` or `alias`."""

    model_version_id: uuid.UUID | None = Field(None, description="The version's id")
    model: ModelNameRef | None = Field(None, description="A registered model's name, with `version` or `alias`")
    version: int | None = Field(None, ge=1, le=2_147_483_647, description="Version number of `model`")
    alias: AliasRef | None = Field(None, description="An alias of `model`")

    # A subclass whose version is optional (unsetting a shadow) says so.
    version_ref_required: ClassVar[bool] = True

    @model_validator(mode="after")
    def _one_form(self) -> Any:
        named = self.model is not None
        if self.model_version_id is not None and (named or self.version is not None or self.alias is not None):
            raise ValueError("name the model version by model_version_id, or by model with version or alias, not both")
        if named and (self.version is None) == (self.alias is None):
            raise ValueError("with model, give exactly one of version or alias")
        if not named and (self.version is not None or self.alias is not None):
            raise ValueError("version and alias need model (the registered model's name)")
        if self.version_ref_required and self.model_version_id is None and not named:
            raise ValueError("name a model version: model_version_id, or model with version or alias")
        return self

    def version_ref(self) -> VersionRef | None:
        if self.model_version_id is None and self.model is None:
            return None
        return VersionRef(version_id=self.model_version_id, model=self.model, version=self.version, alias=self.alias)

    def required_version_ref(self) -> VersionRef:
        """`version_ref` where the version is required, so validation has refused a body without one."""
        ref = self.version_ref()
        assert ref is not None
        return ref


def resolve_version(session: Session, project_id: uuid.UUID, ref: VersionRef) -> ModelVersion:
    """The live version `ref` names among the project's models; NotFound otherwise (also across tenants)."""
    query = (
        select(ModelVersion)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(ModelVersion.deleted_at.is_(None), Model.deleted_at.is_(None), Model.project_id == project_id)
    )
    if ref.version_id is not None:
        query = query.where(ModelVersion.id == ref.version_id)
    elif ref.version is not None:
        query = query.where(Model.name == ref.model, ModelVersion.version == ref.version)
    else:
        query = query.join(
            ModelAlias, (ModelAlias.model_id == Model.id) & (ModelAlias.model_version_id == ModelVersion.id)
        ).where(Model.name == ref.model, ModelAlias.alias == ref.alias)
    version = session.scalar(query)
    if version is None:
        raise NotFound(f"Model version '{ref}' does not exist in this project")
    return version
