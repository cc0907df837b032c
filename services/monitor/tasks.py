"""Celery tasks of the monitor service."""
