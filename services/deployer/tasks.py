"""Celery tasks of the deployer service."""
