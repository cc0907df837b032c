"""MLflow's model-registry semantics on top of the registry domain.

Stages: MLflow's stage names map onto ours, case-insensitively on input as MLflow accepts them:

    MLflow "None"       <-> development
    MLflow "Staging"    <-> staging
    MLflow "Production" <-> production
    MLflow "Archived"   <-> archived

Names: MLflow addresses a registered model by name alone, while our names are unique per project. Every
MLflow call therefore works in the caller's default project (`Access.default_project`): the API key's
project, else the `X-Tessera-Project` header (id or slug), else the organization's project `default`.
Searches cover that project only.

Sources: a version may be created from `runs:/<run_id>/<path>`, `models:/m-<id>` (an MLflow 3 logged
model), `models:/<name>/<version>` (another version of the same project), or a URI inside the artifact
location of the `run_id` or `model_id` sent with it. Arbitrary URIs (`s3://...`, local paths) are refused,
unlike MLflow: they would let one tenant register — and the deployer load — files it cannot otherwise read.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session, selectinload

from services.registry.domain import models as models_domain
from services.registry.domain import versions
from services.registry.domain.models import READ
from shared.core.auth import Access
from shared.core.errors import InvalidParameter, NotFound
from shared.db.models import Model, ModelAlias, ModelVersion, Project

TO_MLFLOW_STAGE = {"development": "None", "staging": "Staging", "production": "Production", "archived": "Archived"}
_FROM_MLFLOW_STAGE = {name.lower(): stage for stage, name in TO_MLFLOW_STAGE.items()}

SEARCH_MODELS_DEFAULT = 100
SEARCH_MODELS_MAX = 1000
SEARCH_VERSIONS_DEFAULT = 10_000
SEARCH_VERSIONS_MAX = 200_000
LOGGED_MODEL_PREFIX = "m-"
PROMPT_TAG = "mlflow.prompt.is_prompt"
# The filter MLflow's client adds to a model search that names no prompt tag: what every search without
# a prompt clause does anyway (see _tag_filters).
PROMPTS_LEFT_OUT = f"tag.`{PROMPT_TAG}` != 'true'"


def stage_from_mlflow(name: str) -> str:
    stage = _FROM_MLFLOW_STAGE.get((name or "").lower())
    if stage is None:
        raise InvalidParameter(
            f"Invalid Model Version stage: {name}. Value must be one of {', '.join(TO_MLFLOW_STAGE.values())}."
        )
    return stage


def project(access: Access, scope: str) -> Project:
    return access.default_project(scope)


def get_model(session: Session, access: Access, name: str | None, scope: str = READ) -> Model:
    model = models_domain.find_by_name(session, project(access, scope).id, models_domain.validate_name(name))
    if model is None:
        raise NotFound(f"Registered Model with name={name} not found")
    return model


def parse_version_number(version: str | int | None) -> int:
    try:
        return int(version)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidParameter(f"Parameter 'version' must be an integer, got '{version}'.") from None


def get_version(
    session: Session, access: Access, name: str | None, version: str | None, scope: str = READ
) -> ModelVersion:
    model = get_model(session, access, name, scope)
    found = versions.find_version(session, model, parse_version_number(version))
    if found is None:
        raise NotFound(f"Model Version (name={name}, version={version}) not found")
    return found


def version_by_alias(session: Session, access: Access, name: str | None, alias: str | None) -> ModelVersion:
    model = get_model(session, access, name)
    if not alias:
        raise InvalidParameter("Registered model alias name cannot be empty.")
    if alias.lower() == "latest":
        latest = session.scalar(
            versions.versions_query(model.id)
            .order_by(ModelVersion.version.desc())
            .limit(1)
            .options(*versions.version_options())
        )
        if latest is None:
            raise NotFound(f"Latest version not found for model {name}.")
        return latest
    row = versions.find_alias(session, model, alias)
    if row is None:
        # MLflow answers an unknown alias with INVALID_PARAMETER_VALUE, not RESOURCE_DOES_NOT_EXIST.
        raise InvalidParameter(f"Registered model alias {alias} not found.")
    return row.model_version


# --- sources ---------------------------------------------------------------------------------------


def _parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.removeprefix(LOGGED_MODEL_PREFIX) if what == "model_id" else value)
    except ValueError:
        raise NotFound(f"No {what.replace('_', ' ')} '{value}' exists") from None


def _uri_parts(uri: str) -> tuple[str, str, tuple[str, ...]]:
    parsed = urllib.parse.urlsplit(uri)
    parts = tuple(urllib.parse.unquote(p) for p in parsed.path.split("/") if p)
    return parsed.scheme.lower(), parsed.netloc.lower(), parts


def _within(source: str, root: str) -> bool:
    scheme, netloc, parts = _uri_parts(source)
    root_scheme, root_netloc, root_parts = _uri_parts(root)
    if any(p in (".", "..") or "\x00" in p for p in parts):
        return False
    same_place = (scheme, netloc) == (root_scheme, root_netloc)
    return same_place and bool(root_parts) and parts[: len(root_parts)] == root_parts


def _invalid_source(source: str, why: str) -> InvalidParameter:
    return InvalidParameter(f"Invalid model version source: '{source}'. {why}")


def resolve_source(
    session: Session, access: Access, model: Model, source: str, run_id: str | None, model_id: str | None
) -> versions.Source:
    if not source:
        raise InvalidParameter("Missing value for required parameter 'source'")
    scheme, netloc, parts = _uri_parts(source)
    run = versions.source_run(session, model, _parse_id(run_id, "run_id")) if run_id else None
    if scheme == "runs":
        if netloc or not parts:
            raise _invalid_source(source, "Expected runs:/<run_id>/<artifact path>.")
        if run is not None and _parse_id(parts[0], "run_id") != run.id:
            raise _invalid_source(source, "The run_id request parameter must identify the run of the source.")
        found = versions.from_run(session, model, _parse_id(parts[0], "run_id"), "/".join(parts[1:]))
        return versions.Source(source, found.artifact_uri, run=found.run)
    if scheme == "models":
        if netloc:
            raise _invalid_source(source, "Remote registries are not supported.")
        if len(parts) == 1 and parts[0].startswith(LOGGED_MODEL_PREFIX):
            if model_id and _parse_id(model_id, "model_id") != _parse_id(parts[0], "model_id"):
                raise _invalid_source(source, "The model_id request parameter must match the source.")
            found = versions.from_logged_model(session, model, _parse_id(parts[0], "model_id"))
            return versions.Source(source, found.artifact_uri, run=found.run or run, logged_model=found.logged_model)
        if len(parts) == 2:
            origin = get_version(session, access, parts[0], parts[1])
            if origin.model.project_id != model.project_id or not origin.artifact_uri:
                raise _invalid_source(source, "The source version must be in the same project.")
            return versions.Source(source, origin.artifact_uri, run=run)
        raise _invalid_source(source, "Expected models:/m-<model_id> or models:/<name>/<version>.")
    if model_id:
        logged = versions.source_logged_model(session, model, _parse_id(model_id, "model_id"))
        if _within(source, logged.artifact_location):
            return versions.Source(source, source, run=run, logged_model=logged)
    if run is not None and run.artifact_uri and _within(source, run.artifact_uri):
        return versions.Source(source, source, run=run)
    raise _invalid_source(
        source,
        "Use runs:/<run_id>/<path>, models:/<model_id>, or a location inside the artifacts of the run_id or "
        "model_id sent with it.",
    )


# --- search ----------------------------------------------------------------------------------------


def _mlflow_parse(parse: Callable[[Any], Any], value: Any) -> Any:
    # MLflow's own filter parser gives its exact grammar; imported here because mlflow is heavy to import.
    from mlflow.exceptions import MlflowException

    try:
        return parse(value)
    except MlflowException as exc:
        raise InvalidParameter(exc.message) from None


def _compare(column: Any, comparator: str, value: Any) -> ColumnElement[bool]:
    match comparator:
        case "=":
            return column == value
        case "!=":
            return column != value
        case "<":
            return column < value
        case "<=":
            return column <= value
        case ">":
            return column > value
        case ">=":
            return column >= value
        case "LIKE":
            return column.like(value)
        case "ILIKE":
            return column.ilike(value)
        case "IN":
            return column.in_(value)
        case "NOT IN":
            return column.not_in(value)
    raise InvalidParameter(f"Invalid comparator '{comparator}'")


_STRING_COMPARATORS = ("=", "!=", "LIKE", "ILIKE")
_NUMERIC_COMPARATORS = ("=", "!=", "<", "<=", ">", ">=")


def _tag_clause(tags_column: Any, clause: dict) -> ColumnElement[bool]:
    if clause["comparator"] not in _STRING_COMPARATORS:
        raise InvalidParameter(f"Invalid comparator for tag: {clause['comparator']}")
    value = tags_column[clause["key"]].as_string()
    if clause["key"] == PROMPT_TAG:
        value = func.coalesce(value, "false")
    # Otherwise a missing tag compares as NULL, so no comparison (not even !=) matches it, as in MLflow.
    return _compare(value, clause["comparator"], clause["value"])


def _tag_filters(tags_column: Any, clauses: list[dict]) -> list[ColumnElement[bool]]:
    """The tag clauses; and unless the filter asks about prompts, MLflow's rule that searches leave out
    prompts (registered models tagged `mlflow.prompt.is_prompt=true`, a missing tag meaning false)."""
    filters = [_tag_clause(tags_column, c) for c in clauses]
    if not any(c["key"] == PROMPT_TAG for c in clauses):
        filters.append(_tag_clause(tags_column, {"key": PROMPT_TAG, "comparator": "!=", "value": "true"}))
    return filters


_ORDER_RE = re.compile(r"^\s*(?:attribute\.|attributes\.)?`?([\w]+)`?(?:\s+(ASC|DESC))?\s*$", re.IGNORECASE)


def _order_by(order_by: list[str], columns: dict[str, Any], tie_breakers: list[tuple[str, bool]]) -> list:
    # Columns are compared by identity: `==` on a column builds SQL instead of answering.
    clauses, seen = [], set()
    for item in order_by:
        match = _ORDER_RE.match(item or "")
        if not match or match.group(1) not in columns:
            raise InvalidParameter(f"Invalid order by key '{item}' specified. Valid keys are {sorted(columns)}")
        column = columns[match.group(1)]
        if id(column) in seen:
            raise InvalidParameter(f"`order_by` contains duplicate fields: {order_by}")
        seen.add(id(column))
        ascending = (match.group(2) or "ASC").upper() == "ASC"
        clauses.append(column.asc() if ascending else column.desc())
    for key, ascending in tie_breakers:
        if id(columns[key]) not in seen:
            clauses.append(columns[key].asc() if ascending else columns[key].desc())
    return clauses


def next_page_token(offset: int, limit: int, rows: int) -> str | None:
    """The token of the page after `limit` rows from `offset`, when `rows` (read one past the page) say
    there is one."""
    if rows <= limit:
        return None
    return base64.b64encode(json.dumps({"offset": offset + limit}).encode()).decode()


def search_models_limit(max_results: int | None) -> int:
    return _max_results(max_results, SEARCH_MODELS_DEFAULT, SEARCH_MODELS_MAX)


def page_offset(page_token: str | None) -> int:
    """The offset a search's page token carries (0 without one); a 400 for a token not ours."""
    if not page_token:
        return 0
    try:
        offset = int(json.loads(base64.b64decode(page_token, validate=True))["offset"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidParameter(f"Invalid page token '{page_token}'") from None
    if offset < 0:
        raise InvalidParameter(f"Invalid page token '{page_token}'")
    return offset


def _page(session: Session, query: Select, page_token: str | None, max_results: int) -> tuple[list, str | None]:
    offset = page_offset(page_token)
    # One row more than asked tells whether there is a next page without a COUNT.
    rows = list(session.scalars(query.offset(offset).limit(max_results + 1)).all())
    return rows[:max_results], next_page_token(offset, max_results, len(rows))


def _max_results(value: int | None, default: int, limit: int) -> int:
    if value is None:
        return default
    if value < 1 or value > limit:
        raise InvalidParameter(
            f"Invalid value for request parameter max_results. It must be at most {limit}, but got value {value}"
        )
    return value


def search_models(
    session: Session,
    access: Access,
    *,
    filter_string: str | None,
    max_results: int | None,
    order_by: list[str],
    page_token: str | None,
) -> tuple[list[Model], str | None]:
    limit = search_models_limit(max_results)
    in_project = Model.project_id == project(access, READ).id
    clauses = _model_filter(filter_string)
    query = search_models_query(in_project, clauses, order_by).options(
        selectinload(Model.aliases).selectinload(ModelAlias.model_version)
    )
    return _page(session, query, page_token, limit)


def _model_filter(filter_string: str | None) -> list[dict]:
    """The parsed filter of a model search. Without one there is nothing to parse (MLflow's parser gives
    []), so the first unfiltered search of a worker does not import mlflow (~1 s)."""
    if not filter_string:
        return []
    from mlflow.utils.search_utils import SearchModelUtils

    return _mlflow_parse(SearchModelUtils.parse_search_filter, filter_string)


def search_models_query(in_project: ColumnElement[bool], clauses: list[dict], order_by: list[str]) -> Select:
    """The live models `in_project` that match the parsed filter `clauses`, in the search's order."""
    query = select(Model).where(in_project, Model.deleted_at.is_(None))
    for clause in clauses:
        if clause["type"] == "tag":
            continue
        if clause["key"] != "name":
            raise InvalidParameter(f"Invalid attribute name: {clause['key']}")
        query = query.where(_compare(Model.name, clause["comparator"], clause["value"]))
    query = query.where(*_tag_filters(Model.tags, [c for c in clauses if c["type"] == "tag"]))
    columns = {
        "name": Model.name,
        "timestamp": Model.updated_at,
        "last_updated_timestamp": Model.updated_at,
        "creation_timestamp": Model.created_at,
    }
    return query.order_by(*_order_by(order_by, columns, [("name", True)]))


def search_versions(
    session: Session,
    access: Access,
    *,
    filter_string: str | None,
    max_results: int | None,
    order_by: list[str],
    page_token: str | None,
) -> tuple[list[ModelVersion], str | None]:
    from mlflow.utils.search_utils import SearchModelVersionUtils

    limit = _max_results(max_results, SEARCH_VERSIONS_DEFAULT, SEARCH_VERSIONS_MAX)
    query = (
        select(ModelVersion)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(
            Model.project_id == project(access, READ).id,
            Model.deleted_at.is_(None),
            ModelVersion.deleted_at.is_(None),
        )
    )
    clauses = _mlflow_parse(SearchModelVersionUtils.parse_search_filter, filter_string)
    query = query.where(*(_version_clause(c) for c in clauses if c["type"] != "tag"))
    query = query.where(*_tag_filters(ModelVersion.tags, [c for c in clauses if c["type"] == "tag"]))
    columns = {
        "name": Model.name,
        "version_number": ModelVersion.version,
        "creation_timestamp": ModelVersion.created_at,
        "last_updated_timestamp": ModelVersion.updated_at,
    }
    order = order_by or ["last_updated_timestamp DESC", "name ASC", "version_number DESC"]
    query = query.order_by(*_order_by(order, columns, [("name", True), ("version_number", False)])).options(
        *versions.version_options()
    )
    return _page(session, query, page_token, limit)


def _version_clause(clause: dict) -> ColumnElement[bool]:
    key, comparator, value = clause["key"], clause["comparator"], clause["value"]
    if key == "name":
        return _compare(Model.name, comparator, value)
    if key == "source_path":
        if comparator not in _STRING_COMPARATORS:
            raise InvalidParameter(f"Invalid comparator for attribute: {comparator}")
        return _compare(ModelVersion.source, comparator, value)
    if key == "version_number":
        if comparator not in _NUMERIC_COMPARATORS or isinstance(value, float):
            raise InvalidParameter(f"Invalid filter on version_number: {comparator} {value!r}")
        return _compare(ModelVersion.version, comparator, parse_version_number(value))
    if key == "run_id":
        # Run ids are UUIDs: equality and lists only; a malformed id simply matches nothing.
        if comparator not in ("=", "!=", "IN", "NOT IN"):
            raise InvalidParameter(f"Invalid comparator for attribute run_id: {comparator}")
        values = value if isinstance(value, list | tuple) else [value]
        ids = [run for run in (_maybe_uuid(v) for v in values) if run is not None]
        if comparator in ("=", "IN"):
            return ModelVersion.run_id.in_(ids)
        return ModelVersion.run_id.not_in(ids)
    raise InvalidParameter(f"Invalid attribute name: {key}")


def _maybe_uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
