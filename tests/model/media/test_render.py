"""Set-of-mark drawing: numbered labels over the candidate masks."""

import numpy as np

from model.media.render import mark_centre, numbered_marks, overlay, palette


def test_numbered_marks_draw_each_number_at_its_box_centre_in_its_colour():
    image = np.full((120, 160, 3), 30, np.uint8)
    first, second = np.zeros((120, 160), bool), np.zeros((120, 160), bool)
    first[20:60, 30:90] = True
    second[70:110, 100:150] = True
    marked = numbered_marks(image, [first, second])
    plain = overlay(image, [first, second])
    colours = palette(2)
    for mask, colour in zip((first, second), colours):
        x, y = (int(v) for v in mark_centre(mask))
        label = marked[y - 6:y + 7, x - 6:x + 7]
        assert (label.min(axis=-1) > 200).any()  # the white digit
        assert (label == colour).all(axis=-1).any()  # on the mask's colour
    assert np.array_equal(marked[:15], plain[:15]) and np.array_equal(marked[:, :25], plain[:, :25])  # labels only
    assert mark_centre(np.zeros((4, 4), bool)) is None
