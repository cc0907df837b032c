"""A standalone model server: one MLflow pyfunc model behind MLflow's scoring protocol and KServe V2.

Run as its own process (`python -m services.deployer.model_server ...`); the deployer's process manager
spawns, supervises and stops these.
"""
