"""Celery tasks of the notifier service."""
