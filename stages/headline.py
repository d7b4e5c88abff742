"""headline: metrics/{train,eval,classifier}.json -> metrics/headline.json, the numbers DVC shows and compares."""

from pathlib import Path

from mnist_vae.files import save_json
from mnist_vae.pipeline import headline
from mnist_vae.pipeline.stage import run_stage

OUT = Path("metrics/headline.json")


def main(params):
    numbers = headline.collect()
    save_json(OUT, numbers)
    print(f"headline: {len(numbers)} numbers in {OUT} (`dvc metrics diff` compares them with the last commit)")


if __name__ == "__main__":
    run_stage("headline", main)
