"""Demo data so a new user sees a populated platform: 3 people, an organization with 2 projects, an API
key of the owner's with every scope (which the README's walk, train to webhook, uses), and 2 registered
models whose versions are the models the seeded training runs logged (`runs:/<run>/model`), so they
have lineage to a run and a model server can load them.

Idempotent: every object is looked up by its natural key first, and what exists is left untouched
(passwords included), so a second run changes nothing; the key is made, and shown, by the first run only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.registry.domain import models as models_domain
from services.registry.domain import versions
from services.registry.domain.bootstrap import create_key_for
from services.registry.domain.identity import add_organization_member, create_user
from services.registry.domain.organizations import found_organization
from services.registry.domain.projects import create_project_row
from shared.core.artifacts import ArtifactStore
from shared.core.auth import Access, Principal
from shared.core.errors import InvalidState
from shared.db.models import Model, ModelVersion, Organization, OrganizationMembership, Project, User

DEMO_PASSWORD = "tessera-demo"
OWNER_KEY_SCOPE = "admin"
ORG_SLUG = "acme"
# (email, full name, role in the organization)
PEOPLE = (
    ("ada@example.com", "Ada Lovelace", "owner"),
    ("grace@example.com", "Grace Hopper", "member"),
    ("alan@example.com", "Alan Turing", "viewer"),
)
# (project slug, model name, description, [(training run whose model each version is, its stage)] in order)
MODELS = (
    (
        "fraud-detection",
        "fraud-classifier",
        "Card transaction fraud (boosted trees)",
        (("gbm-baseline", "archived"), ("gbm-deeper", "production")),
    ),
    ("default", "churn-predictor", "Monthly churn risk per customer", (("logreg-l2", "development"),)),
)


@dataclass
class SeedReport:
    created: list[str] = field(default_factory=list)
    # (email, role, password or None when the account already existed and kept its own)
    logins: list[tuple[str, str, str | None]] = field(default_factory=list)
    owner_email: str = PEOPLE[0][0]
    # The owner's key with every scope (`admin`), made with the organization; None on later runs.
    api_key: str | None = None
    owner_id: uuid.UUID | None = None
    # Project slug -> id, of the seeded organization.
    projects: dict[str, uuid.UUID] = field(default_factory=dict)
    # Model name -> its versions' ids, version 1 first.
    versions: dict[str, list[uuid.UUID]] = field(default_factory=dict)

    def owner_access(self, session: Session, project_id: uuid.UUID) -> Access:
        """The owner acting in a project: what the seed's writes are made as (audited as theirs)."""
        if self.owner_id is None:
            raise InvalidState("The demo owner is not seeded yet")
        return Access(session, Principal(user_id=self.owner_id, email=self.owner_email), project_hint=str(project_id))


def seed_people(session: Session, *, password: str = DEMO_PASSWORD) -> SeedReport:
    """The people, the organization with the owner's key, and the projects."""
    report = SeedReport()
    users: dict[str, tuple[User, str]] = {}
    for email, full_name, role in PEOPLE:
        user = session.scalar(select(User).where(User.email == email))
        is_new = user is None
        if user is None:
            user = create_user(session, email=email, password=password, full_name=full_name)
            report.created.append(f"user {email}")
        report.logins.append((email, role, password if is_new else None))
        users[email] = (user, role)

    owner = users[PEOPLE[0][0]][0]
    org = session.scalar(select(Organization).where(Organization.slug == ORG_SLUG))
    if org is None:
        org = found_organization(
            session,
            owner=owner,
            name="Acme ML",
            slug=ORG_SLUG,
            description="Demo organization created by `tessera seed`",
        )
        report.created.append(f"organization {ORG_SLUG}")
        _, report.api_key = create_key_for(
            session,
            email=owner.email,
            scopes=[OWNER_KEY_SCOPE],
            org_slug=ORG_SLUG,
            project=None,
            expires_in_days=None,
            name="seeded owner key",
        )
        report.created.append(f"API key of {owner.email} (scope {OWNER_KEY_SCOPE})")
    roles = dict(
        session.execute(
            select(OrganizationMembership.user_id, OrganizationMembership.role).where(
                OrganizationMembership.organization_id == org.id
            )
        ).all()
    )
    for user, role in users.values():
        if user.id not in roles:
            add_organization_member(session, org.id, user, role)
            report.created.append(f"membership {user.email} ({role})")

    projects = {p.slug: p for p in session.scalars(select(Project).where(Project.organization_id == org.id))}
    if "fraud-detection" not in projects:
        projects["fraud-detection"] = create_project_row(
            session,
            org.id,
            name="Fraud Detection",
            slug="fraud-detection",
            description="Scoring card transactions in real time",
        )
        report.created.append("project fraud-detection")

    report.owner_id = owner.id
    report.projects = {slug: project.id for slug, project in projects.items()}
    return report


def seed_models(
    session: Session, store: ArtifactStore, report: SeedReport, training_runs: Mapping[str, uuid.UUID]
) -> None:
    """The models, each version registered from its training run's logged model (`training_runs`: run name
    -> run id); fills `report.versions`. A model already there is left as it is."""
    for project_slug, name, description, trained in MODELS:
        project_id = report.projects[project_slug]
        model = session.scalar(select(Model).where(Model.project_id == project_id, Model.name == name))
        if model is None:
            access = report.owner_access(session, project_id)
            model = models_domain.create_model(
                session, access, project_id, name=name, description=description, tags={"seeded": "true"}
            )
            for number, (run_name, stage) in enumerate(trained, start=1):
                source = versions.from_run(session, model, training_runs[run_name], "model")
                version = versions.create_version(
                    session, access, model, source, store=store, description=f"{name} v{number}, trained by {run_name}"
                )
                versions.transition_stage(session, access, version, stage)
            report.created.append(f"model {name} ({len(trained)} version(s), each from its training run)")
        report.versions[name] = list(
            session.scalars(
                select(ModelVersion.id).where(ModelVersion.model_id == model.id).order_by(ModelVersion.version)
            )
        )
