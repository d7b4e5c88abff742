"""track: the pipeline's outputs -> one MLflow run (or, if the store already holds this result, none)."""

from pathlib import Path

from mnist_vae.pipeline import ui_view
from mnist_vae.pipeline.mlflow_store import shown_uri, tracking_uri, ui_address
from mnist_vae.pipeline.stage import run_stage
from mnist_vae.pipeline.tracking import Result, log_result, run_line


def result(params) -> Result:
    """The pipeline's outputs as one result to log."""
    return Result(
        params=params,
        history=Path("metrics/history.csv"),
        metrics={"train": Path("metrics/train.json"), "eval": Path("metrics/eval.json"),
                 "classifier": Path("metrics/classifier.json"), "sampler": Path("metrics/sampler.json")},
        artifacts={Path("metrics/history.csv"): "", Path("metrics/train.json"): "", Path("metrics/eval.json"): "",
                   Path("metrics/classifier.json"): "", Path("metrics/sampler.json"): "",
                   Path("metrics/headline.json"): "",
                   Path("models/vae.pt"): "checkpoint", Path("models/sampler.pt"): "checkpoint",
                   Path("models/best_sampler.json"): "checkpoint",
                   Path("reports/figures"): "figures", Path("reports/progress"): "progress",
                   Path("reports/explorer.html"): ""},
        checkpoint=Path("models/vae.pt"),
        headline=Path("metrics/headline.json"),
        datasets={"training": Path("data/processed/train.npz"), "testing": Path("data/processed/test.npz")},
        images=[Path("reports/figures"), Path("reports/progress")],
        params_file=Path("params.yaml"),
    )


def main(params):
    experiment_id, run_id, created = log_result(result(params))
    after = "" if tracking_uri().startswith(("http://", "https://")) else " (after `make ui`)"
    print(f"{run_line(run_id, created)} in experiment '{params.tracking.experiment}' at {shown_uri(tracking_uri())}\n"
          f"track: {ui_address(experiment_id, run_id)}{after}")
    print(f"track: the runs' digits side by side: {ui_address(experiment_id, query=ui_view.QUERY)}")
    if params.tracking.log_model:
        print(f"track: the experiment's models: {ui_address(experiment_id, tab='models')}")


if __name__ == "__main__":
    run_stage("track", main)
