"""The variational autoencoder and its math: the model, the objectives, the training loop and its saved
state, the evaluation of likelihood and posterior, and the latent samplers fitted to its codes.

Uses data and the core modules; knows nothing of the pipeline, MLflow, scoring or figures.
"""
