"""Tessera's console: server-rendered pages at /console/ over the platform's own REST API."""
