"""Celery tasks of the registry service."""
