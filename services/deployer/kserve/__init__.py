"""Schema data for the KServe target (loaded with importlib.resources by `domain/kserve.py`)."""
