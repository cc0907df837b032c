"""Demo data so a new user sees a populated platform: 3 people, an organization with 2 projects,
2 registered models with versions, a stopped local deployment (no model server needed), and an API key
of the owner's with every scope, which is what the README's walk (train to webhook) uses.

Idempotent: every object is looked up by its natural key first, and what exists is left untouched
(passwords included), so a second run changes nothing; the key is made, and shown, by the first run only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.registry.domain.bootstrap import create_key_for
from services.registry.domain.identity import add_organization_member, create_user
from services.registry.domain.organizations import found_organization
from services.registry.domain.projects import create_project_row
from shared.db.models import Deployment, Model, ModelVersion, Organization, OrganizationMembership, Project, User

DEMO_PASSWORD = "tessera-demo"
OWNER_KEY_SCOPE = "admin"
ORG_SLUG = "acme"
# (email, full name, role in the organization)
PEOPLE = (
    ("ada@example.com", "Ada Lovelace", "owner"),
    ("grace@example.com", "Grace Hopper", "member"),
    ("alan@example.com", "Alan Turing", "viewer"),
)
# (project slug, model name, description, stage of each version in order)
MODELS = (
    ("fraud-detection", "fraud-classifier", "Card transaction fraud (boosted trees)", ("production", "staging")),
    ("default", "churn-predictor", "Monthly churn risk per customer", ("development",)),
)
DEPLOYMENT = ("fraud-detection", "fraud-classifier-prod", "fraud-classifier", 1)


@dataclass
class SeedReport:
    created: list[str] = field(default_factory=list)
    # (email, role, password or None when the account already existed and kept its own)
    logins: list[tuple[str, str, str | None]] = field(default_factory=list)
    owner_email: str = PEOPLE[0][0]
    # The owner's key with every scope (`admin`), made with the organization; None on later runs.
    api_key: str | None = None


def seed(session: Session, *, password: str = DEMO_PASSWORD) -> SeedReport:
    report = SeedReport()
    users = {}
    for email, full_name, role in PEOPLE:
        user = session.scalar(select(User).where(User.email == email))
        is_new = user is None
        if is_new:
            user = create_user(session, email=email, password=password, full_name=full_name)
            report.created.append(f"user {email}")
        report.logins.append((email, role, password if is_new else None))
        users[email] = (user, role)

    owner = users[PEOPLE[0][0]][0]
    org = session.scalar(select(Organization).where(Organization.slug == ORG_SLUG))
    if org is None:
        org = found_organization(session, owner=owner, name="Acme ML", slug=ORG_SLUG,
                                 description="Demo organization created by `tessera seed`")
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
    roles = dict(session.execute(
        select(OrganizationMembership.user_id, OrganizationMembership.role)
        .where(OrganizationMembership.organization_id == org.id)
    ).all())
    for user, role in users.values():
        if user.id not in roles:
            add_organization_member(session, org.id, user, role)
            report.created.append(f"membership {user.email} ({role})")

    projects = {p.slug: p for p in session.scalars(select(Project).where(Project.organization_id == org.id))}
    if "fraud-detection" not in projects:
        projects["fraud-detection"] = create_project_row(
            session, org.id, name="Fraud Detection", slug="fraud-detection",
            description="Scoring card transactions in real time",
        )
        report.created.append("project fraud-detection")

    models = {}
    for project_slug, name, description, stages in MODELS:
        project = projects[project_slug]
        model = session.scalar(select(Model).where(Model.project_id == project.id, Model.name == name))
        if model is None:
            model = Model(project_id=project.id, name=name, description=description, tags={"seeded": "true"},
                          created_by=owner.id, last_version=len(stages))
            session.add(model)
            session.flush()
            for number, stage in enumerate(stages, start=1):
                session.add(ModelVersion(
                    model_id=model.id, version=number, stage=stage, status="READY",
                    description=f"{name} v{number}", source=f"seed://{project_slug}/{name}/{number}",
                    created_by=owner.id,
                ))
            session.flush()
            report.created.append(f"model {name} (versions 1-{len(stages)})")
        models[name] = model

    project_slug, deployment_name, model_name, version = DEPLOYMENT
    project = projects[project_slug]
    exists = select(Deployment.id).where(Deployment.project_id == project.id, Deployment.name == deployment_name)
    if session.scalar(exists) is None:
        version_id = session.scalar(
            select(ModelVersion.id).where(
                ModelVersion.model_id == models[model_name].id, ModelVersion.version == version
            )
        )
        session.add(Deployment(
            project_id=project.id, name=deployment_name, target="local", status="stopped",
            model_version_id=version_id, config={}, created_by=owner.id,
            status_reason="Seeded stopped: start it from the deployer",
        ))
        session.flush()
        report.created.append(f"deployment {deployment_name} (local, stopped)")
    return report
