"""Left/right landmark pairs and the left-right axis of an image.

Mirroring an image along the patient's left-right axis is a valid
augmentation (and test-time augmentation) for roughly symmetric anatomy,
provided that paired landmarks swap: the left eye of the mirrored image is
the right eye of the original. Pairs are declared in ``dataset.json``
(``"pairs": [["left_eye", "right_eye"]]``); :func:`propose_pairs` suggests
them from the names.

Examples
--------
>>> propose_pairs(["nose", "left_eye", "right_eye", "Ear_L", "Ear_R", "LEye2", "REye2"])
[('left_eye', 'right_eye'), ('Ear_L', 'Ear_R'), ('LEye2', 'REye2')]
>>> swap_permutation(["nose", "left_eye", "right_eye"], [("left_eye", "right_eye")])
[0, 2, 1]
"""
from __future__ import annotations

import re

import numpy as np

from nnlandmark.geometry import ImageGrid, PreprocessedGrid, preprocessed_image_grid
from nnlandmark.errors import InvalidInput

__all__ = ["propose_pairs", "swap_permutation", "left_right_axis"]

#: side token (lower case) -> (side, token of the other side); forms never mix (l pairs with r, not right)
_SIDES = {"l": ("left", "r"), "r": ("right", "l"), "lt": ("left", "rt"), "rt": ("right", "lt"),
          "left": ("left", "right"), "right": ("right", "left")}

# Tokens are runs of letters/digits split at separators and at camelCase
# boundaries ("LEye" -> "L", "Eye"; "eyeLeft" -> "eye", "Left"). Digits stay
# attached ("L1" is a vertebra, not a left "1").
_TOKEN = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+[0-9]*|[A-Z]+[0-9]*|[0-9]+")


def _side_variants(name: str):
    """(key, side) for every side token of ``name`` at its start or end.

    ``key`` is the name with that token blanked out, lower-cased, plus the
    token's form; two names with equal keys and opposite sides are mirror
    images of each other.
    """
    tokens = list(_TOKEN.finditer(name))
    for m in (tokens[:1] + tokens[-1:]) if len(tokens) > 1 else tokens:
        low = m.group().lower()
        if low in _SIDES:
            side, other = _SIDES[low]
            form = min(low, other)  # "l"/"r" -> "l", "left"/"right" -> "left", "lt"/"rt" -> "lt"
            yield (name[:m.start()].lower(), form, name[m.end():].lower()), side


def propose_pairs(names) -> list:
    """Suggest ``(left, right)`` pairs among landmark names.

    A name has a side when its first or last token is ``left``/``right``,
    ``lt``/``rt`` or ``l``/``r`` (any case). Tokens are separated by ``_``,
    ``-``, ``.``, spaces or a camelCase boundary: ``left_eye``, ``eye-right``,
    ``Ear_L``, ``l.ear``, ``LeftEye``, ``eyeR``, ``LEye`` all have a side;
    ``Lateral``, ``L1`` and ``LSLMS`` do not (no boundary after the letter).
    Two names pair when they are the same apart from that token (compared
    case-insensitively) and its form matches (``l`` with ``r``, ``left`` with
    ``right``). A name that could pair with more than one other name is left
    out: pairs are only proposed when unambiguous.

    Parameters
    ----------
    names : sequence of str

    Returns
    -------
    list of (str, str)
        ``(left, right)`` tuples in the order of their first name in ``names``;
        every name occurs in at most one pair.

    Examples
    --------
    >>> propose_pairs(["Left Ear", "right ear", "L_ant", "R_ant", "L_ant2"])
    [('Left Ear', 'right ear'), ('L_ant', 'R_ant')]
    >>> propose_pairs(["eye_l", "eye_r", "EYE_L"])  # two lefts for one right: ambiguous
    []
    """
    names = list(names)
    by_key: dict = {}
    for name in names:
        for key, side in _side_variants(name):
            by_key.setdefault(key, {"left": [], "right": []})[side].append(name)
    unambiguous = [(k["left"][0], k["right"][0]) for k in by_key.values()
                   if len(k["left"]) == 1 and len(k["right"]) == 1 and k["left"] != k["right"]]
    pairs, used = [], set()
    for left, right in sorted(unambiguous, key=lambda p: min(names.index(p[0]), names.index(p[1]))):
        if not used & {left, right}:
            pairs.append((left, right))
            used.update((left, right))
    return pairs


def swap_permutation(names, pairs) -> list:
    """Channel permutation that exchanges paired landmarks.

    ``permuted = channels[perm]`` turns the channels of a mirrored image into
    the channels of the original: ``perm[i]`` is the index of the partner of
    landmark ``i`` (itself when unpaired). The permutation is its own inverse.

    Raises
    ------
    ValueError
        For a pair naming an unknown landmark, a landmark paired with itself,
        or a landmark in two pairs.
    """
    names = list(names)
    perm = list(range(len(names)))
    seen = set()
    for pair in pairs:
        if len(pair) != 2 or any(n not in names for n in pair) or pair[0] == pair[1]:
            raise InvalidInput(f"pair {list(pair)} must be two different landmarks of {names}")
        if seen & set(pair):
            raise InvalidInput(f"landmark of pair {list(pair)} is already in another pair")
        seen.update(pair)
        a, b = names.index(pair[0]), names.index(pair[1])
        perm[a], perm[b] = b, a
    return perm


def left_right_axis(direction, transpose_forward) -> int:
    """Axis of nnU-Net's preprocessed array that runs closest to the patient's left-right direction.

    Parameters
    ----------
    direction : array_like
        The image's 3x3 direction matrix (ITK: columns are the world
        directions of the i, j, k axes), or its 9 values row by row as
        SimpleITK returns them.
    transpose_forward : sequence of 3 int
        nnU-Net's plans ``transpose_forward``.

    Returns
    -------
    int
        Spatial axis (0-2) of the preprocessed array. The left-right
        direction is world x (LPS). For an oblique image the axis with the
        largest left-right component wins (the first on a tie).

    Notes
    -----
    Cropping and resampling keep the direction of every array axis, so only
    the direction matrix and the transpose matter; a unit grid with them
    stands in for the real one.

    Examples
    --------
    >>> left_right_axis(np.eye(3), (0, 1, 2))  # array (k, j, i): x = i is the last axis
    2
    >>> left_right_axis(np.eye(3), (2, 0, 1))
    0
    >>> left_right_axis([0, 0, 1, 0, 1, 0, -1, 0, 0], (0, 1, 2))  # x runs along k
    0
    """
    grid = ImageGrid(size=(1, 1, 1), spacing=(1, 1, 1), origin=(0, 0, 0), direction=direction)
    unit = PreprocessedGrid(transpose_forward=transpose_forward, crop_start=(0, 0, 0), cropped_shape=(1, 1, 1),
                            preprocessed_shape=(1, 1, 1))
    # the columns of this direction matrix are the world directions of the saved array's
    # ITK axes, i.e. of the preprocessed axes in reverse order
    world_axes = preprocessed_image_grid(unit, grid).direction
    return 2 - int(np.argmax(np.abs(world_axes[0])))
