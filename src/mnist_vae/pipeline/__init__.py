"""The DVC pipeline's own machinery: the stage runner that every stage script calls, the headline numbers,
and the tracking that logs a result to MLflow.

Uses every layer below it (api, report, scoring, vae, data, core).
"""
