"""A standalone model server: one MLflow pyfunc model behind MLflow's scoring protocol and KServe V2.

Run as its own process (`python -m services.deployer.model_server ...`); the deployer's process manager
spawns, supervises and stops these.
"""

# Sent on /ping; the process manager checks it so it never mistakes another server on a reused port for its
# own. Defined here, not in app.py, so the manager can import it without importing mlflow or FastAPI.
PID_HEADER = "x-model-server-pid"

# Request batching, as the gateway asks it of the model server per request (the deployment's setting, so a
# change applies without restarting servers): "<max_batch_size>;<max_latency_ms>".
BATCHING_HEADER = "x-tessera-batching"


def batching_header_value(max_batch_size: int, max_latency_ms: float) -> str:
    return f"{max_batch_size};{max_latency_ms:g}"


def parse_batching_header(value: str) -> tuple[int, float] | None:
    """(max_batch_size, max_latency_s), or None for a value that does not ask for batching."""
    size, _, latency = value.partition(";")
    try:
        max_batch_size, max_latency_s = int(size), float(latency) / 1000.0
    except ValueError:
        return None
    if max_batch_size < 2 or not 0.0 <= max_latency_s <= 1.0:
        return None
    return max_batch_size, max_latency_s
