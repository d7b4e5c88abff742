"""Operations around the pipeline: the hyperparameter search over DVC experiments, and the team's
PostgreSQL + MLflow server.

Uses pipeline and the layers below it; never shipped inside a logged model.
"""
