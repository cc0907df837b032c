"""A standalone model server: one MLflow pyfunc model behind MLflow's scoring protocol and KServe V2.

Run as its own process (`python -m services.deployer.model_server ...`); the deployer's process manager
spawns, supervises and stops these.
"""

# Sent on /ping; the process manager checks it so it never mistakes another server on a reused port for its
# own. Defined here, not in app.py, so the manager can import it without importing mlflow or FastAPI.
PID_HEADER = "x-model-server-pid"
