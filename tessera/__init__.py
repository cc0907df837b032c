"""The composition root: the one package that knows every service (see tessera/platform.py, worker.py, cli.py)."""

# The services, by name: here, so the command line can list them without importing any of them.
SERVICES = ("registry", "tracking", "deployer", "monitor", "notifier")
