"""The logged MLflow model's code (MLflow's models-from-code): MLflow runs this file to build the model, which
then loads its weights from the model's artifacts in load_context. See api/serving.py."""

import mlflow

from mnist_vae.api.serving import ServedVAE

mlflow.models.set_model(ServedVAE())
