"""Celery tasks of the tracking service."""
