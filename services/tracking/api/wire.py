"""What the MLflow tracking routes accept, for /openapi.json only.

The handlers parse protobuf JSON with orjson and validate in the domain (services/tracking/domain/
validation.py), not with Pydantic: a 1000-metric batch would cost more to validate than to store. These
models describe the same rules (MLflow's limits, key characters, id shapes, enums) so that generated
clients and fuzzers send what the server takes; tests/platform/test_schemathesis.py holds the two together.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.tracking.domain import validation as limits
from shared.core.docs import schema_ref

# 32 lower-case hex digits (a UUID as MLflow shows run ids).
Hex32 = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
ExperimentId = Annotated[str, Field(pattern=r"^(0|[0-9a-f]{32})$", description='"0" is the default experiment')]
LoggedModelId = Annotated[str, Field(pattern=r"^m-[0-9a-f]{32}$")]
# Names that stay themselves as file paths: segments of letters, digits and `_-.: `, none starting with a dot.
KEY_PATTERN = r"^[\w\- :][\w.\- :]*(/[\w\- :][\w.\- :]*)*$"
Key = Annotated[str, Field(min_length=1, max_length=limits.MAX_KEY_LENGTH, pattern=KEY_PATTERN)]
ExperimentName = Annotated[str, Field(min_length=1, max_length=limits.MAX_EXPERIMENT_NAME_LENGTH)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
MaxResults = Annotated[int, Field(ge=1, le=limits.MAX_RESULTS_THRESHOLD)]
ViewType = Literal["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]
RunStatus = Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]


class _Body(BaseModel):
    # MLflow clients of other versions send fields we do not know: they are ignored.
    model_config = ConfigDict(extra="allow")


class _Tag(_Body):
    key: Key
    value: Annotated[str, Field(max_length=limits.MAX_TAG_VALUE_LENGTH)]


class _ExperimentTag(_Body):
    key: Key
    value: Annotated[str, Field(max_length=limits.MAX_EXPERIMENT_TAG_VALUE_LENGTH)]


class _Param(_Body):
    key: Key
    value: Annotated[str, Field(max_length=limits.MAX_PARAM_VALUE_LENGTH)]


class _Metric(_Body):
    key: Key
    value: float
    timestamp: Int64
    step: Int64 = 0


class CreateExperiment(_Body):
    name: ExperimentName
    artifact_location: str | None = None
    tags: list[_ExperimentTag] = Field(default_factory=list, max_length=limits.MAX_PARAMS_TAGS_PER_BATCH)


class ExperimentRef(_Body):
    experiment_id: ExperimentId


class ExperimentByName(_Body):
    experiment_name: ExperimentName


class SearchExperiments(_Body):
    filter: str | None = None
    order_by: list[str] = Field(default_factory=list)
    max_results: MaxResults | None = None
    page_token: str | None = None
    view_type: ViewType | None = None


class RenameExperiment(_Body):
    experiment_id: ExperimentId
    new_name: ExperimentName


class SetExperimentTag(_ExperimentTag):
    experiment_id: ExperimentId


class DeleteExperimentTag(_Body):
    experiment_id: ExperimentId
    key: Key


class CreateRun(_Body):
    experiment_id: ExperimentId | None = None
    user_id: str | None = None
    run_name: Annotated[str, Field(max_length=limits.MAX_TAG_VALUE_LENGTH)] | None = None
    start_time: Int64 | None = None
    tags: list[_Tag] = Field(default_factory=list, max_length=limits.MAX_PARAMS_TAGS_PER_BATCH)


class RunRef(_Body):
    run_id: Hex32


class UpdateRun(RunRef):
    status: RunStatus | None = None
    end_time: Int64 | None = None
    run_name: Annotated[str, Field(max_length=limits.MAX_TAG_VALUE_LENGTH)] | None = None


class SetRunTag(_Tag):
    run_id: Hex32


class DeleteRunTag(RunRef):
    key: Key


class LogParam(_Param):
    run_id: Hex32


class LogMetric(_Metric):
    run_id: Hex32


class LogBatch(RunRef):
    metrics: list[_Metric] = Field(default_factory=list, max_length=limits.MAX_METRICS_PER_BATCH)
    params: list[_Param] = Field(default_factory=list, max_length=limits.MAX_PARAMS_TAGS_PER_BATCH)
    tags: list[_Tag] = Field(default_factory=list, max_length=limits.MAX_PARAMS_TAGS_PER_BATCH)


class _Dataset(_Body):
    name: Annotated[str, Field(min_length=1, max_length=limits.MAX_DATASET_NAME_LENGTH)]
    digest: Annotated[str, Field(min_length=1, max_length=limits.MAX_DATASET_DIGEST_LENGTH)]
    source_type: str
    source: str
    schema_: str | None = Field(None, alias="schema")
    profile: str | None = None


class _InputTag(_Body):
    key: Annotated[str, Field(min_length=1, max_length=limits.MAX_INPUT_TAG_KEY_LENGTH)]
    value: Annotated[str, Field(max_length=limits.MAX_INPUT_TAG_VALUE_LENGTH)]


class _DatasetInput(_Body):
    dataset: _Dataset
    tags: list[_InputTag] = Field(default_factory=list)


class _ModelInput(_Body):
    model_id: LoggedModelId


class _ModelOutput(_ModelInput):
    step: Int64 = 0


class LogInputs(RunRef):
    datasets: list[_DatasetInput] = Field(default_factory=list, max_length=limits.MAX_DATASETS_PER_REQUEST)
    models: list[_ModelInput] = Field(default_factory=list)


class LogOutputs(RunRef):
    models: list[_ModelOutput] = Field(default_factory=list)


class SearchRuns(_Body):
    experiment_ids: list[ExperimentId] = Field(default_factory=list)
    filter: str | None = None
    run_view_type: ViewType | None = None
    max_results: MaxResults | None = None
    order_by: list[str] = Field(default_factory=list)
    page_token: str | None = None


class MetricHistory(_Body):
    run_id: Hex32
    metric_key: Key
    max_results: MaxResults | None = None
    page_token: str | None = None


class MetricHistoryBulkInterval(_Body):
    run_ids: Annotated[list[Hex32], Field(min_length=1, max_length=100)]
    metric_key: Key
    start_step: Int64 | None = None
    end_step: Int64 | None = None
    max_results: MaxResults | None = None


class CreateLoggedModel(_Body):
    experiment_id: ExperimentId
    name: Annotated[str, Field(min_length=1, max_length=limits.MAX_KEY_LENGTH)] | None = None
    model_type: str | None = None
    source_run_id: Hex32 | None = None
    params: list[_Param] = Field(default_factory=list, max_length=limits.MAX_PARAMS_TAGS_PER_BATCH)
    tags: list[_Tag] = Field(default_factory=list, max_length=limits.MAX_PARAMS_TAGS_PER_BATCH)


class SearchLoggedModels(_Body):
    experiment_ids: list[ExperimentId] = Field(default_factory=list)
    filter: str | None = None
    order_by: list[Any] = Field(default_factory=list)
    max_results: MaxResults | None = None
    page_token: str | None = None


class FinalizeLoggedModel(_Body):
    status: Literal["LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"]


class LoggedModelTags(_Body):
    tags: list[_Tag] = Field(default_factory=list, max_length=limits.MAX_PARAMS_TAGS_PER_BATCH)


class LoggedModelParams(_Body):
    params: list[_Param] = Field(default_factory=list, max_length=limits.MAX_PARAMS_TAGS_PER_BATCH)


def body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` of a route that reads `model` as its JSON body."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema_ref(model)}}}}


def query(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` of a GET route that reads `model`'s fields as query parameters (lists repeated)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    required = set(schema.get("required", ()))
    parameters = []
    for name, field in schema["properties"].items():
        # An optional parameter is left out, never sent as null.
        choices = [choice for choice in field.get("anyOf", [field]) if choice.get("type") != "null"]
        parameters.append({"name": name, "in": "query", "required": name in required, "schema": choices[0]})
    return {"parameters": parameters}
