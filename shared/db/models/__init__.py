"""Every table of the one Tessera schema. Import from here so Alembic and the services see all of them."""

from shared.db.models.deployer import Deployment, DeploymentHistory
from shared.db.models.events import OutboxEvent
from shared.db.models.identity import (
    Organization,
    OrganizationMembership,
    Project,
    ProjectMember,
    User,
)
from shared.db.models.monitor import Alert, DataDriftReport, ModelMonitoring
from shared.db.models.notifier import NotificationChannel, NotificationRule
from shared.db.models.registry import Model, ModelAlias, ModelVersion, ModelVersionTransition
from shared.db.models.security import ApiKey, AuditLog
from shared.db.models.tracking import (
    Dataset,
    Experiment,
    ExperimentRun,
    ExperimentTag,
    LoggedModel,
    LoggedModelMetric,
    LoggedModelParam,
    LoggedModelTag,
    RunDatasetInput,
    RunLatestMetric,
    RunMetric,
    RunModelLink,
    RunParam,
    RunTag,
)

__all__ = [
    "Alert",
    "ApiKey",
    "AuditLog",
    "DataDriftReport",
    "Dataset",
    "Deployment",
    "DeploymentHistory",
    "Experiment",
    "ExperimentRun",
    "ExperimentTag",
    "LoggedModel",
    "LoggedModelMetric",
    "LoggedModelParam",
    "LoggedModelTag",
    "Model",
    "ModelAlias",
    "ModelMonitoring",
    "ModelVersion",
    "ModelVersionTransition",
    "NotificationChannel",
    "NotificationRule",
    "Organization",
    "OrganizationMembership",
    "OutboxEvent",
    "Project",
    "ProjectMember",
    "RunDatasetInput",
    "RunLatestMetric",
    "RunMetric",
    "RunModelLink",
    "RunParam",
    "RunTag",
    "User",
]
