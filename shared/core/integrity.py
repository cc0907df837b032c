"""What a refusal by the database's constraints means to the caller, said the way a lookup would say it.

Two writers can both pass a "does it exist?" check and race to the insert; the constraint decides, and the
loser must hear exactly what it would have heard had it come second: MLflow's client relies on it
(`set_experiment` and `register_model` read the winner's row on RESOURCE_ALREADY_EXISTS and carry on),
and so do scripts against the native API. Each unique rule is named here with the error its lookup raises;
rules not named here answer RESOURCE_ALREADY_EXISTS, MLflow's code for any duplicate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from sqlalchemy import Index, PrimaryKeyConstraint, Table, UniqueConstraint
from sqlalchemy.exc import IntegrityError

from shared.core.errors import AlreadyExists, Conflict, NotFound, TesseraError
from shared.db import models  # noqa: F401  (every table in Base.metadata, for SQLite's column lists)
from shared.db.base import Base


@dataclass(frozen=True)
class Duplicate:
    """The error for a duplicate under one unique rule; `message` may name the row's columns ({name})."""

    error: type[TesseraError]
    message: str
    # Said when the statement's values do not fill `message` (a batch insert, an UPDATE).
    fallback: str


_DUPLICATES: dict[str, Duplicate] = {
    # MLflow's surface (tracking and the model registry): the messages MLflow's store gives.
    "uq_experiments_project_id_name": Duplicate(
        AlreadyExists, "Experiment '{name}' already exists.", "An experiment with this name already exists."
    ),
    "ix_models_project_id_name": Duplicate(
        AlreadyExists, "Registered Model (name={name}) already exists.", "A registered model with this name exists."
    ),
    "uq_model_versions_model_id_version": Duplicate(
        AlreadyExists, "Model version {version} already exists.", "This model version already exists."
    ),
    "pk_model_aliases": Duplicate(AlreadyExists, "Alias '{alias}' already exists.", "This alias already exists."),
    "pk_run_params": Duplicate(
        AlreadyExists, "Param '{key}' was already logged for this run.", "A param was already logged for this run."
    ),
    # The native API's tenancy tree answers 409 for these (its documented code, as its lookups raise).
    "uq_users_email": Duplicate(
        Conflict, "A user with email '{email}' already exists", "A user with this email already exists"
    ),
    "uq_organizations_slug": Duplicate(
        Conflict, "An organization with slug '{slug}' already exists", "An organization with this slug exists"
    ),
    "uq_projects_organization_id_slug": Duplicate(
        Conflict,
        "A project with slug '{slug}' already exists in this organization",
        "A project with this slug already exists in this organization",
    ),
    "uq_organization_memberships_organization_id_user_id": Duplicate(
        Conflict, "The user is already a member", "The user is already a member"
    ),
    "uq_project_members_project_id_user_id": Duplicate(
        Conflict, "The user already has a role in this project", "The user already has a role in this project"
    ),
}

_PG_UNIQUE, _PG_FOREIGN_KEY = "23505", "23503"
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>.+)")


def error_for(exc: IntegrityError) -> TesseraError:
    """The caller's error for a constraint the database enforced."""
    constraint = _unique_constraint(exc)
    if constraint is not None:
        return _duplicate(constraint, _row_values(exc))
    if getattr(exc.orig, "sqlstate", None) == _PG_FOREIGN_KEY and "is not present" in str(exc.orig):
        # The row this write refers to is gone (deleted by a concurrent request).
        return NotFound("A record this change refers to does not exist (it may just have been deleted)")
    return Conflict("The change conflicts with existing data (a missing or still-referenced record)")


def _duplicate(constraint: str, values: dict[str, object]) -> TesseraError:
    duplicate = _DUPLICATES.get(constraint)
    if duplicate is None:
        return AlreadyExists(f"The record already exists ({constraint})")
    try:
        message = duplicate.message.format_map(values)
    except (KeyError, IndexError, ValueError):
        message = duplicate.fallback
    return duplicate.error(message)


_INSERT_COLUMNS = re.compile(r"INSERT INTO \S+ \((?P<columns>[^)]*)\) VALUES", re.IGNORECASE)


def _row_values(exc: IntegrityError) -> dict[str, object]:
    """The refused row's values by column, when the statement inserted one row (named parameters on
    PostgreSQL, positional ones in the INSERT's column order on SQLite)."""
    if isinstance(exc.params, dict):
        return exc.params
    columns = _INSERT_COLUMNS.match(exc.statement or "")
    if columns is None or not isinstance(exc.params, tuple):
        return {}
    names = [name.strip().strip('"') for name in columns["columns"].split(",")]
    return dict(zip(names, exc.params, strict=False)) if len(names) == len(exc.params) else {}


def _unique_constraint(exc: IntegrityError) -> str | None:
    """The name of the unique rule the write broke, or None if it broke another kind of constraint."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == _PG_UNIQUE:
        return orig.diag.constraint_name or ""  # type: ignore[union-attr]
    found = _SQLITE_UNIQUE.match(str(orig))
    if found is None:
        return None
    # SQLite names the columns ("experiments.project_id, experiments.name"), not the rule.
    qualified = [column.strip().split(".", 1) for column in found["columns"].split(",")]
    table = qualified[0][0]
    return _unique_rules(table).get(tuple(column for _, column in qualified), "")


@cache
def _unique_rules(table_name: str) -> dict[tuple[str, ...], str]:
    table: Table | None = Base.metadata.tables.get(table_name)
    if table is None:
        return {}
    rules: list[PrimaryKeyConstraint | UniqueConstraint | Index] = [
        c for c in table.constraints if isinstance(c, PrimaryKeyConstraint | UniqueConstraint)
    ]
    rules += [index for index in table.indexes if index.unique]
    return {tuple(column.name for column in rule.columns): str(rule.name) for rule in rules}
