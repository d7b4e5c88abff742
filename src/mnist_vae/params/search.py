"""The `search` section of params.yaml: `mnist-vae search` reads it, no stage does."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Discriminator, Field, Strict, Tag, model_validator

from mnist_vae.params.base import Count, PositiveInt, Section

# a study's name is also the prefix of its DVC experiments' names (git refs) and an MLflow tag
STUDY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
# an objective names a number in the pipeline's metrics: <file stem in metrics/>.<key>.<key>...
METRIC_KEY = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$"
Choice = Union[Annotated[int, Strict()], Annotated[float, Strict()], Annotated[bool, Strict()], str, None]


class SearchRange(Section):
    """A range of one param: whole numbers if low and high both are (a step too), else real numbers."""

    low: Union[Annotated[int, Strict()], float]
    high: Union[Annotated[int, Strict()], float]
    log: bool = False
    step: Optional[Union[Annotated[int, Strict(), Field(gt=0)], Annotated[float, Field(gt=0)]]] = None

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and isinstance(self.step, (int, type(None)))

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"a range needs low < high, got low {self.low} and high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("a range takes log or step, not both")
        return self


# a mapping is a range, anything else a list of choices (so an error names what the entry was meant to be)
SpaceEntry = Annotated[
    Union[Annotated[list[Choice], Field(min_length=1), Tag("choices")], Annotated[SearchRange, Tag("range")]],
    Discriminator(lambda v: "range" if isinstance(v, (dict, SearchRange)) else "choices")]


class SearchObjective(Section):
    metric: Annotated[str, Field(pattern=METRIC_KEY)] = "eval.test.iw_nll"
    direction: Literal["minimize", "maximize"] = "minimize"


class SearchParams(Section):
    """The hyperparameter search (`mnist-vae search run`); read by no stage, so it is no stage's dependency."""

    study: Annotated[str, Field(pattern=STUDY_NAME)] = "vae-search"
    # one objective, or several (Optuna's multi-objective mode: the best trials are a Pareto front)
    objectives: Annotated[list[SearchObjective], Field(min_length=1)] = Field(
        default_factory=lambda: [SearchObjective()])
    algorithm: Literal["tpe", "random", "grid"] = "tpe"  # Optuna's sampler: how the next trial's params are chosen
    n_trials: PositiveInt = 20  # trials COMPLETE (or PRUNED) when the study ends, whatever the number of workers
    # Optuna's median pruner on each epoch's test -ELBO (nats, beta = 1), reported while a trial trains
    pruner: Literal["none", "median"] = "none"
    prune_startup_trials: Count = 5  # trials run to the end before any is pruned
    prune_warmup_epochs: Count = 5   # epochs of a trial that are never pruned
    # param key -> a list of choices, or a range {low, high, log, step}
    space: dict[str, SpaceEntry] = Field(
        default_factory=lambda: {"train.beta": SearchRange(low=0.25, high=4.0, log=True),
                                 "model.latent_dim": [2, 5, 10, 20, 50]})

    @model_validator(mode="after")
    def _space_not_empty(self):
        if not self.space:
            raise ValueError("search.space is empty; name at least one param key")
        return self

    @model_validator(mode="after")
    def _pruner_needs_one_minimized_objective(self):
        if self.pruner != "none" and [o.direction for o in self.objectives] != ["minimize"]:
            raise ValueError(f"search.pruner {self.pruner} compares each epoch's test -ELBO (lower is better), so it "
                             "needs one objective to minimize; set search.pruner: none for this one")
        return self


