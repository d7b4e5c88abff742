"""classifier: data/raw/mnist.npz -> models/classifier.pt (the quality metrics' feature extractor), metrics/classifier.json."""

from mnist_vae.files import load_npz, save_json
from mnist_vae.pipeline.stage import run_stage
from mnist_vae.scoring import classifier

RAW, MODEL, METRICS = "data/raw/mnist.npz", "models/classifier.pt", "metrics/classifier.json"


def main(params):
    raw = load_npz(RAW, ("x_train", "y_train", "x_test", "y_test"))
    model, metrics = classifier.fit(classifier.scale_pixels(raw["x_train"]), raw["y_train"],
                                    classifier.scale_pixels(raw["x_test"]), raw["y_test"], params.classifier)
    classifier.save(MODEL, model)
    save_json(METRICS, metrics)
    print(f"classifier: test accuracy {metrics['test_accuracy']:.4f}, trained in {metrics['train_time']:.1f}s "
          f"on {metrics['n_train']} digits ({metrics['threads']} threads)")


if __name__ == "__main__":
    run_stage("classifier", main)
