"""course_lib.widgets: explorers that update their readout and picture on every slider move."""
from __future__ import annotations

import ipywidgets as widgets
import pytest

from course_lib import widgets as explorers


def parts(box: widgets.VBox) -> dict[str, list]:
    """Every widget inside ``box``, by kind (the structure the browser test relies on)."""
    found, todo = {"float": [], "int": [], "selection": [], "html": [], "image": []}, [box]
    while todo:
        w = todo.pop(0)
        todo.extend(getattr(w, "children", ()))
        for kind, cls in (("float", widgets.FloatSlider), ("int", widgets.IntSlider),
                          ("selection", widgets.SelectionSlider), ("html", widgets.HTML), ("image", widgets.Image)):
            if isinstance(w, cls):
                found[kind].append(w)
    return found


def test_momentum_and_batch_size_explorer_structure_and_updates():
    box = explorers.running_stats_explorer(n_batches=100)
    found = parts(box)
    (momentum,), (batch_size,) = found["float"], found["int"]
    assert momentum.description == "momentum" and "batch" in batch_size.description
    assert momentum.value == 0.1 and batch_size.value == 20
    (image,) = found["image"]
    readout = found["html"][-1]
    assert "try" in found["html"][0].value.lower()  # the description says what to try
    for slider, new_value in ((momentum, 0.11), (batch_size, 21), (momentum, 0.5), (batch_size, 200)):
        before_text, before_png = readout.value, image.value
        slider.value = new_value
        assert readout.value != before_text and image.value != before_png
        assert image.value[:4] == b"\x89PNG"
    assert "momentum 0.50, batch size 200" in readout.value
    box = explorers.running_stats_explorer(n_batches=100, data_mean=1.0)
    assert "N(1, 1)" in parts(box)["html"][0].value and "N(1, 1)" in parts(box)["html"][-1].value


def test_group_norm_explorer_offers_only_divisors_and_updates():
    box = explorers.group_norm_explorer()
    found = parts(box)
    (groups,) = found["selection"]
    assert list(groups.options) == [1, 2, 3, 6] and groups.value == 3 and "group" in groups.description
    (image,), readout = found["image"], found["html"][-1]
    for g in (1, 6, 2):
        before_text, before_png = readout.value, image.value
        groups.value = g
        assert readout.value != before_text and image.value != before_png
        assert f"G = {g}" in readout.value and "mean" in readout.value and "e+" not in readout.value
    with pytest.raises(ValueError, match=r"expected num_groups in \[1, 2, 3, 6\]"):
        explorers.group_norm_explorer(num_groups=4)
