"""pipeline/ui_view.py: the saved view of the runs' digits, as the experiment tag the MLflow UI reads."""

import json

from mnist_vae.pipeline import ui_view


def state(value: str) -> dict:
    return json.loads(json.loads(value)["state"])


def test_each_key_gets_a_full_width_card_without_the_runs_params_figures_before_frames():
    layout = ui_view.layout(["progress/samples", "reconstructions", "samples/gmm", "samples/prior"])
    assert [c["imageKeys"] for c in layout["compareRunCharts"]] == [
        ["samples/prior"], ["samples/gmm"], ["reconstructions"], ["progress/samples"]]
    assert all(c["type"] == "IMAGE" and c["showRunParams"] is False and c["step"] == 0 for c in layout["compareRunCharts"])
    sections = {s["uuid"]: s for s in layout["compareRunSections"]}
    assert [c["metricSectionId"] for c in layout["compareRunCharts"]] == ["mnist-vae-figures"] * 3 + ["mnist-vae-frames"]
    assert all(s["columns"] == 1 for s in sections.values()) and len(sections) == 2
    assert [s["name"] for s in ui_view.layout(["samples/prior"])["compareRunSections"]] == [ui_view.SECTIONS["figures"]]


def test_the_view_grows_to_the_union_of_the_keys_and_is_left_alone_when_it_has_them():
    first = ui_view.tag_value(["samples/prior", "progress/samples"])
    assert json.loads(first)["name"] == ui_view.NAME
    assert ui_view.tag_value(["samples/prior"], first) is None  # nothing new: no write
    grown = ui_view.tag_value(["samples/flow"], first)
    assert ui_view.keys_of(grown) == ["samples/prior", "samples/flow", "progress/samples"]
    assert json.loads(grown)["createdAt"] == json.loads(first)["createdAt"]
    assert state(grown)["isAccordionReordered"] is True


def test_a_tag_this_module_did_not_write_is_replaced_not_read():
    assert ui_view.keys_of("not json") == [] and ui_view.keys_of(json.dumps({"state": "{}"})) == []
    assert ui_view.keys_of(ui_view.tag_value(["samples/prior"], "{}")) == ["samples/prior"]
