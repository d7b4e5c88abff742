"""track: the pipeline's outputs -> one MLflow run (or, if the store already holds this result, none)."""

from pathlib import Path

from mnist_vae.cli import run_stage
from mnist_vae.tracking import Result, log_result, run_line, shown_uri, tracking_uri, ui_address


def main(params):
    result = Result(
        params=params,
        history=Path("metrics/history.csv"),
        metrics={"train": Path("metrics/train.json"), "eval": Path("metrics/eval.json"),
                 "classifier": Path("metrics/classifier.json"), "sampler": Path("metrics/sampler.json")},
        artifacts={Path("metrics/history.csv"): "", Path("metrics/train.json"): "", Path("metrics/eval.json"): "",
                   Path("metrics/classifier.json"): "", Path("metrics/sampler.json"): "",
                   Path("models/vae.pt"): "checkpoint", Path("models/sampler.pt"): "checkpoint",
                   Path("reports/figures"): "figures",
                   Path("reports/explorer.html"): ""},
        checkpoint=Path("models/vae.pt"),
    )
    experiment_id, run_id, created = log_result(result)
    print(f"{run_line(run_id, created)} in experiment '{params.tracking.experiment}' at {shown_uri(tracking_uri())}\n"
          f"track: {ui_address(experiment_id, run_id)}")


if __name__ == "__main__":
    run_stage("track", main)
