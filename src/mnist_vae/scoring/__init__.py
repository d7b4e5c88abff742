"""Sample and representation quality in a digit classifier's feature space: the classifier, FID,
precision and recall, class coverage, the linear probe.

Uses vae, data and the core modules.
"""
