"""A hyperparameter sweep as people run one: N training processes started at the same moment (as Optuna,
Ray Tune or `python train.py &` in a loop do), each creating the sweep's experiment if it is not there yet,
logging a run and registering its model under one name. Against Tessera every trial succeeds: the
experiment and the model are created once, and the model's versions are numbered 1..N.

    export MLFLOW_TRACKING_URI=http://127.0.0.1:8000 MLFLOW_TRACKING_TOKEN=tsk_...   # see the README
    python examples/sweep.py --processes 16

It prints one line per trial and a summary, and exits non-zero if any trial failed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import uuid

EPOCHS = 3


def trial(barrier, results, experiment: str, model: str, index: int, total: int) -> None:
    """One training job: a logistic regression with its own regularization, trained for a few epochs."""
    try:
        import mlflow
        import mlflow.sklearn
        from sklearn.datasets import make_classification
        from sklearn.linear_model import SGDClassifier

        features, labels = make_classification(n_samples=400, n_features=8, random_state=index)
        alpha = 10 ** (-4 + 3 * index / max(total - 1, 1))
        classifier = SGDClassifier(loss="log_loss", alpha=alpha, random_state=index)
        barrier.wait(timeout=120)  # every trial starts at once: the races a real sweep runs into
        experiment_id = mlflow.set_experiment(experiment).experiment_id
        # Named explicitly: when another trial created the experiment a moment earlier, the mlflow client's
        # set_experiment returns it without making it the active one (runs would land in "Default").
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"trial-{index}") as run:
            mlflow.log_params({"alpha": alpha, "loss": "log_loss"})
            for epoch in range(EPOCHS):
                classifier.partial_fit(features, labels, classes=[0, 1])
                mlflow.log_metric("accuracy", classifier.score(features, labels), step=epoch)
            # Requirements given (mlflow would infer them in a subprocess per model) and cloudpickle rather
            # than skops: each trial then takes about a second instead of ten.
            info = mlflow.sklearn.log_model(
                classifier,
                name="model",
                registered_model_name=model,
                pip_requirements=["scikit-learn"],
                serialization_format="cloudpickle",
            )
        results.put({"trial": index, "experiment_id": experiment_id, "run_id": run.info.run_id,
                     "version": int(info.registered_model_version)})  # fmt: skip
    except BaseException as exc:  # reported to the parent, which fails the sweep
        results.put({"trial": index, "error": f"{type(exc).__name__}: {exc}"})


def sweep(processes: int, experiment: str, model: str) -> list[dict]:
    """Run the trials in `processes` processes; each trial's result (or error), in trial order."""
    context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    if sys.platform != "win32":
        # The forkserver imports the heavy libraries once; each trial forks from it.
        context.set_forkserver_preload(["mlflow", "mlflow.sklearn", "sklearn.linear_model"])
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=trial, args=(barrier, results, experiment, model, index, processes))
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    return sorted(outcomes, key=lambda outcome: outcome["trial"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--experiment", default=f"sweep-{uuid.uuid4().hex[:6]}")
    parser.add_argument("--model", default=None, help="registered model name (default: the experiment's)")
    args = parser.parse_args()
    model = args.model or args.experiment
    started = time.perf_counter()
    outcomes = sweep(args.processes, args.experiment, model)
    for outcome in outcomes:
        print(outcome)
    failed = [outcome for outcome in outcomes if "error" in outcome]
    experiments = {outcome["experiment_id"] for outcome in outcomes if "error" not in outcome}
    versions = sorted(outcome["version"] for outcome in outcomes if "error" not in outcome)
    elapsed = time.perf_counter() - started
    print(f"{len(outcomes) - len(failed)}/{len(outcomes)} trials succeeded in {elapsed:.1f} s")
    print(f"experiment '{args.experiment}' (id {', '.join(experiments)}); model '{model}' versions {versions}")
    return 1 if failed or len(experiments) != 1 or versions != list(range(1, args.processes + 1)) else 0


if __name__ == "__main__":
    sys.exit(main())
