import mlflow


def test_smoke(mlflow_client, experiment_id):
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_param("lr", 0.1)
        mlflow.log_metric("loss", 1.5, step=1)
        mlflow.set_tag("team", "a")
    got = mlflow_client.get_run(run.info.run_id)
    assert got.data.params == {"lr": "0.1"}
    assert got.data.metrics == {"loss": 1.5}
    assert got.info.status == "FINISHED"
