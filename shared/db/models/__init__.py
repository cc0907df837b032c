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
from shared.db.models.registry import Model, ModelVersion
from shared.db.models.security import ApiKey, AuditLog
from shared.db.models.tracking import Experiment, ExperimentRun, RunMetric

__all__ = [
    "Alert",
    "ApiKey",
    "AuditLog",
    "DataDriftReport",
    "Deployment",
    "DeploymentHistory",
    "Experiment",
    "ExperimentRun",
    "Model",
    "ModelMonitoring",
    "ModelVersion",
    "NotificationChannel",
    "NotificationRule",
    "Organization",
    "OrganizationMembership",
    "OutboxEvent",
    "Project",
    "ProjectMember",
    "RunMetric",
    "User",
]
