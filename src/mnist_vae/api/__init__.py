"""Using a trained model: loading it from a checkpoint or MLflow, the tasks (sample, encode, decode,
reconstruct, interpolate, traverse), image files, and the MLflow model that serves them.

Uses vae, data and the core modules; independent of report. The logged MLflow model carries this
layer and the layers below it, nothing above.
"""
