"""The experiment's saved view "Digits side by side": the MLflow UI's Chart view with one full-width image
grid per figure the runs logged (samples/prior, samples/<sampler>, reconstructions, ...), the runs' digits
next to each other under their names, and the training's frames (progress/...) with their step slider.

MLflow's UI makes an image grid per key by itself, but three to a row, each run's image under the list of
all its params (about a hundred here), which pushes the digits out of sight. A view is a layout the UI
reads from an experiment tag (`mlflow.sharedViewState.<key>`; Views menu, or `viewStateShareKey=<key>` in
the address); its format is the UI's own (MLflow 3.17), not a documented API: an MLflow that does not know
it opens the plain Chart view, and the runs keep every image. The track stage keeps the view in step with
the keys its runs logged (the union of all of them, so one run's figures never hide another's).
"""

from __future__ import annotations

import json
import time

VIEW = "digits"  # the view's key
TAG = f"mlflow.sharedViewState.{VIEW}"
QUERY = f"compareRunsMode=CHART&viewStateShareKey={VIEW}"  # what opens the view, in a runs page's address
NAME = "Digits side by side"
SECTIONS = {"figures": "Digits side by side (the trained models)", "frames": "Digits forming, epoch by epoch"}
CARD_HEIGHT = 520  # pixels: room for a 10 x 10 grid of digits per run


def order(keys) -> list[str]:
    """The image keys as the view lists them: samples (prior first), reconstructions, other figures, frames."""
    def rank(key: str):
        frame = key.startswith("progress/")
        figure = key.removeprefix("progress/")
        return (frame, not figure.startswith("samples"), figure not in ("samples/prior", "samples"),
                figure != "reconstructions", figure)
    return sorted(set(keys), key=rank)


def layout(keys) -> dict:
    """The Chart view's state: a section of the figures and one of the frames, a full-width card per key,
    no params under the runs' names; the UI's own sections of metric charts follow."""
    cards = [{"uuid": f"mnist-vae-{key}", "type": "IMAGE", "imageKeys": [key], "step": 0, "showRunParams": False,
              "runsCountToCompare": 10, "deleted": False, "isGenerated": False,
              "metricSectionId": f"mnist-vae-{'frames' if key.startswith('progress/') else 'figures'}"}
             for key in order(keys)]
    used = {card["metricSectionId"] for card in cards}
    sections = [{"uuid": f"mnist-vae-{part}", "name": name, "display": True, "isReordered": True, "deleted": False,
                 "isGenerated": False, "columns": 1, "cardHeight": CARD_HEIGHT}
                for part, name in SECTIONS.items() if f"mnist-vae-{part}" in used]
    return {"compareRunCharts": cards, "compareRunSections": sections, "isAccordionReordered": True,
            "runListHidden": False, "searchFilter": ""}


def keys_of(tag_value: str | None) -> list[str]:
    """The image keys a stored view shows ([] for none, or one this module did not write)."""
    try:
        state = json.loads(json.loads(tag_value)["state"])
        return [key for card in state["compareRunCharts"] for key in card["imageKeys"]]
    except (TypeError, ValueError, KeyError):
        return []


def tag_value(keys, stored: str | None = None) -> str | None:
    """The tag's new value for a run that logged `keys`, given its `stored` value; None when it holds them all."""
    shown = keys_of(stored)
    if stored is not None and set(keys) <= set(shown):
        return None
    try:
        created = json.loads(stored)["createdAt"]
    except (TypeError, ValueError, KeyError):
        created = int(1000 * time.time())
    return json.dumps({"name": NAME, "createdAt": created, "updatedAt": int(1000 * time.time()),
                       "state": json.dumps(layout([*shown, *keys]))})


def keep(client, experiment_id: str, keys) -> None:
    """Make the experiment's view show the image `keys` (besides those it shows already)."""
    if not keys:
        return
    value = tag_value(keys, client.get_experiment(experiment_id).tags.get(TAG))
    if value is not None:
        client.set_experiment_tag(experiment_id, TAG, value)
