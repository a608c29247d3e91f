"""Visual QC: orthogonal slices through each landmark with reference and prediction.

The image is first reoriented (``sitk.DICOMOrient(image, "LPS")``: axis
permutations and flips only, no resampling) so that ITK axes i, j, k run towards
patient Left, Posterior and Superior. Points are then mapped with
:func:`nnlandmark.geometry.world_to_index` on the reoriented grid, and the three
views are shown in radiological convention:

========  ==================  ======================  ========================
view      slice               horizontal axis          vertical axis
========  ==================  ======================  ========================
axial     k (constant z)      i: patient right on the  j: anterior at the top
                              left of the screen
coronal   j (constant y)      i: right on the left     k: superior at the top
sagittal  i (constant x)      j: anterior on the left  k: superior at the top
========  ==================  ======================  ========================

Pixels are drawn with their physical aspect ratio (from the spacing). For an
oblique image the display axes are the nearest anatomical axes, while the points
are still placed exactly (continuous index on the reoriented grid).

A 2D image (one slice, see :mod:`nnlandmark.data.images`) gets one picture
instead (:func:`plot_landmarks_2d`): the whole image as its file stores it (row 0
at the top, no reorientation, no anatomical labels), every landmark on it.

Examples
--------
>>> import numpy as np, SimpleITK as sitk, tempfile, pathlib
>>> from nnlandmark.data.landmarks import Landmarks
>>> image = sitk.GetImageFromArray(np.random.rand(20, 30, 40).astype(np.float32))
>>> pred = Landmarks(points={"a": np.array([10.0, 12.0, 8.0])})
>>> ref = Landmarks(points={"a": np.array([11.0, 12.0, 8.0])})
>>> out = pathlib.Path(tempfile.mkdtemp()) / "a.png"
>>> plot_landmark_slices(image, pred, ref, out).stat().st_size > 0
True
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnlandmark.data.landmarks import Landmarks
from nnlandmark.geometry import ImageGrid, itk_to_array_axis, nearest_voxel, world_to_index
from nnlandmark.report.plots import new_figure, save_figure

REFERENCE_STYLE = dict(marker="o", markersize=11, markerfacecolor="none", markeredgecolor="lime",
                       markeredgewidth=1.8, linestyle="none")
PREDICTION_STYLE = dict(marker="x", markersize=10, color="red", markeredgewidth=2.0, linestyle="none")

# view name -> (ITK axis held constant, horizontal ITK axis, vertical ITK axis,
#               imshow origin, (left, right, top, bottom) anatomical labels)
_VIEWS = (
    ("axial", 2, 0, 1, "upper", ("R", "L", "A", "P")),
    ("coronal", 1, 0, 2, "lower", ("R", "L", "S", "I")),
    ("sagittal", 0, 1, 2, "lower", ("A", "P", "S", "I")),
)


def load_display_image(image) -> sitk.Image:
    """A scalar 3D image reoriented to LPS-aligned axes (see the module notes).

    Parameters
    ----------
    image : path-like or SimpleITK.Image
        A 3D image; of a vector image the first component is shown.
    """
    image = _as_image(image)
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() > 1:
        image = sitk.VectorIndexSelectionCast(image, 0)
    return sitk.DICOMOrient(image, "LPS")


def _as_image(image) -> sitk.Image:
    """A path read (:func:`nnlandmark.data.images.read_image`: a 2D file as one slice), a 2D
    SimpleITK image as one slice, a 3D one as it is."""
    from nnlandmark.data.images import as_volume, read_image
    return as_volume(image) if isinstance(image, sitk.Image) else read_image(image)


def _slice(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice of a (k, j, i) array at ITK ``axis`` = ``index``, as (vertical, horizontal):
    (j, i) for axis 2, (k, i) for axis 1, (k, j) for axis 0."""
    return np.take(array, index, axis=itk_to_array_axis(axis))


def _describe(name: str, predicted: Landmarks, reference: Landmarks | None) -> str:
    pred, ref = predicted.point(name), None if reference is None else reference.point(name)
    if pred is not None and ref is not None:
        return f"{name}: error {float(np.linalg.norm(np.asarray(pred) - np.asarray(ref))):.2f} mm"
    parts = [f"prediction {predicted.status(name)}" if pred is None else ""]
    if reference is None:
        parts.append("no reference")
    elif ref is None:
        parts.append(f"reference {reference.status(name)}")
    return f"{name}: " + ", ".join(p for p in parts if p)


def plot_landmark_slices(image, predicted: Landmarks, reference: Landmarks | None, out_png,
                         names=None, half_width_mm: float | None = None, dpi: int = 100) -> Path:
    """Axial, coronal and sagittal slices through each landmark, one row per landmark.

    The slices pass through the nearest voxel of the reference point (of the
    prediction when there is no reference point). The reference is a green circle,
    the prediction a red cross, both projected onto each slice plane; the row title
    gives the name and the radial error in mm (or why there is none).

    Parameters
    ----------
    image : path-like or SimpleITK.Image
        The case's 3D image.
    predicted : Landmarks
        Predicted points (LPS mm).
    reference : Landmarks or None
        Reference points (LPS mm), if any.
    out_png : path-like
        Output PNG.
    names : sequence of str, optional
        Landmarks to show, in this order. Default: the reference names, then
        predicted names not in the reference.
    half_width_mm : float, optional
        Zoom each view to +-``half_width_mm`` around the slice centre; default
        whole slices.
    dpi : int
        Resolution of the PNG (each panel is 3.2 x 3.2 inches).

    Returns
    -------
    Path of the PNG.
    """
    image = _as_image(image)
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        return plot_landmarks_2d(image, predicted, reference, out_png, names=names, dpi=dpi)
    display = load_display_image(image)
    grid = ImageGrid.from_image(display)
    array = sitk.GetArrayFromImage(display).astype(np.float32)
    finite = array[np.isfinite(array)]
    # robust window: a few hot voxels must not wash out the anatomy
    vmin, vmax = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1.0
    spacing = np.asarray(grid.spacing)
    size = np.asarray(grid.size)

    if names is None:
        names = list(reference.names) if reference is not None else []
        names += [n for n in predicted.names if n not in names]
    names = list(names)
    if not names:
        raise ValueError("no landmarks to plot")

    fig = new_figure(3 * 3.2, 3.2 * len(names) + 0.5)
    axes = fig.subplots(len(names), 3, squeeze=False)
    for row, name in enumerate(names):
        pred = predicted.point(name)
        ref = None if reference is None else reference.point(name)
        centre = ref if ref is not None else pred
        axes[row, 0].set_title(_describe(name, predicted, reference), loc="left", fontsize=10,
                               fontweight="bold")
        if centre is None:
            for ax in axes[row]:
                ax.set_axis_off()
            axes[row, 1].text(0.5, 0.5, "no point to show", ha="center", va="center",
                              transform=axes[row, 1].transAxes)
            continue
        centre_index = world_to_index(centre, grid)
        voxel = np.clip(nearest_voxel(centre_index), 0, size - 1)
        outside = not grid.contains_index(centre_index)
        points = [(world_to_index(p, grid), style) for p, style in
                  ((ref, REFERENCE_STYLE), (pred, PREDICTION_STYLE)) if p is not None]
        for ax, (view, fixed, h, v, origin, (left, right, top, bottom)) in zip(axes[row], _VIEWS):
            ax.set_facecolor("#1c2a3a")  # beyond the image edge when zoomed or clipped
            ax.imshow(_slice(array, fixed, int(voxel[fixed])), cmap="gray", vmin=vmin, vmax=vmax,
                      origin=origin, aspect=spacing[v] / spacing[h], interpolation="nearest")
            for index, style in points:
                ax.plot(index[h], index[v], **style)
            if half_width_mm is not None:
                ch, cv = centre_index[h], centre_index[v]
                rh, rv = half_width_mm / spacing[h], half_width_mm / spacing[v]
                ax.set_xlim(ch - rh, ch + rh)
                # keep the origin's orientation: 'upper' means y grows downwards
                ax.set_ylim((cv + rv, cv - rv) if origin == "upper" else (cv - rv, cv + rv))
            else:
                # points outside the image must not stretch the axes
                ax.set_xlim(-0.5, size[h] - 0.5)
                ax.set_ylim((size[v] - 0.5, -0.5) if origin == "upper" else (-0.5, size[v] - 0.5))
            ax.set_xticks([])
            ax.set_yticks([])
            label = f"{view} {'ijk'[fixed]}={int(voxel[fixed])}" + (" (outside image)" if outside else "")
            ax.set_xlabel(label, fontsize=8)
            for text, x, y, ha, va in ((left, 0.02, 0.5, "left", "center"),
                                       (right, 0.98, 0.5, "right", "center"),
                                       (top, 0.5, 0.98, "center", "top"),
                                       (bottom, 0.5, 0.02, "center", "bottom")):
                ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color="yellow", fontsize=8)
    handles = [axes[0, 0].plot([], [], **REFERENCE_STYLE)[0], axes[0, 0].plot([], [], **PREDICTION_STYLE)[0]]
    fig.legend(handles, ["reference", "prediction"], loc="upper right", ncol=2, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (3.2 * len(names) + 0.5)))
    return save_figure(fig, out_png, dpi=dpi)


def plot_landmarks_2d(image, predicted: Landmarks, reference: Landmarks | None, out_png, names=None,
                      dpi: int = 100) -> Path:
    """One picture of a 2D image with every landmark: reference (green circle), prediction
    (red cross), a yellow line between them, each labelled with its number in ``names``
    (the legend below lists them, with the radial error in mm).

    The image is shown as its file stores it (pixel row 0 at the top, with the pixels'
    aspect ratio); points are placed with :func:`nnlandmark.geometry.world_to_index` on its
    grid. The title gives the mean radial error of the landmarks present in both.

    >>> import numpy as np, SimpleITK as sitk, tempfile, pathlib
    >>> from nnlandmark.data.landmarks import Landmarks
    >>> image = sitk.GetImageFromArray(np.random.rand(30, 40).astype(np.float32))  # 2D
    >>> pred = Landmarks(points={"a": np.array([10.0, 12.0, 0.0])})
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.png"
    >>> plot_landmarks_2d(image, pred, Landmarks(points={"a": np.array([11.0, 12.0, 0.0])}), out).is_file()
    True
    """
    image = _as_image(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        image = sitk.VectorIndexSelectionCast(image, 0)
    grid = ImageGrid.from_image(image)
    if not grid.is_2d:
        raise ValueError(f"expected a 2D image (one slice), got size {grid.size}")
    array = sitk.GetArrayFromImage(image)[0].astype(np.float32)  # (j, i)
    finite = array[np.isfinite(array)]
    vmin, vmax = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1.0
    if names is None:
        names = list(reference.names) if reference is not None else []
        names += [n for n in predicted.names if n not in names]
    names = list(names)
    width, height = grid.size[0] * grid.spacing[0], grid.size[1] * grid.spacing[1]
    panel = 7.0
    fig = new_figure(panel, panel * height / width + 0.4 + 0.18 * len(names))
    ax = fig.add_axes((0.02, 0.02 + (0.18 * len(names)) / fig.get_figheight(), 0.96,
                       panel * height / width / fig.get_figheight()))
    ax.set_facecolor("#1c2a3a")
    ax.imshow(array, cmap="gray", vmin=vmin, vmax=vmax, origin="upper",
              aspect=grid.spacing[1] / grid.spacing[0], interpolation="nearest")
    errors, lines = [], []
    for number, name in enumerate(names, start=1):
        pred = predicted.point(name)
        ref = None if reference is None else reference.point(name)
        found = [world_to_index(p, grid)[:2] for p in (ref, pred) if p is not None]
        if ref is not None and pred is not None:
            errors.append(float(np.linalg.norm(np.asarray(pred) - np.asarray(ref))))
            ax.plot([found[0][0], found[1][0]], [found[0][1], found[1][1]], color="yellow", linewidth=1.0)
        if ref is not None:
            ax.plot(*found[0], **REFERENCE_STYLE)
        if pred is not None:
            ax.plot(*found[-1], **PREDICTION_STYLE)
        if found:
            ax.annotate(str(number), found[0], xytext=(6, 6), textcoords="offset points", color="yellow",
                        fontsize=9, fontweight="bold")
        lines.append(f"{number} {_describe(name, predicted, reference)}")
    ax.set_xlim(-0.5, grid.size[0] - 0.5)
    ax.set_ylim(grid.size[1] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    summary = f"MRE {np.mean(errors):.2f} mm over {len(errors)} landmarks" if errors else "no errors to show"
    ax.set_title(summary, loc="left", fontsize=10, fontweight="bold")
    fig.text(0.02, 0.01, "\n".join(lines), fontsize=8, va="bottom", family="monospace")
    handles = [ax.plot([], [], **REFERENCE_STYLE)[0], ax.plot([], [], **PREDICTION_STYLE)[0]]
    ax.legend(handles, ["reference", "prediction"], loc="upper right", fontsize=8)
    return save_figure(fig, out_png, dpi=dpi)
