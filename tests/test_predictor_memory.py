"""The sigmoid step of prediction: same values as before, without whole-array copies (issue 3)."""
import torch

from nnlandmark.nnunet.predictor import sigmoid_in_place


def _logits(shape=(4, 9, 10, 11)):
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(shape, generator=generator) * 8).half()


def test_matches_whole_array_sigmoid_and_writes_in_place():
    logits = _logits()
    expected = torch.sigmoid(logits.float()).half()
    pointer = logits.data_ptr()
    heatmaps = sigmoid_in_place(logits)
    assert heatmaps.dtype == torch.float16
    assert heatmaps.data_ptr() == pointer  # no (L, ...) copy was made
    assert torch.equal(heatmaps, expected)


def test_non_contiguous_view_as_left_by_padding_removal():
    # nnU-Net returns the padded logits cropped by slicing, i.e. a strided view
    padded = _logits((3, 12, 12, 12))
    view = padded[:, 1:10, 2:11, :7]
    expected = torch.sigmoid(view.float()).half()
    heatmaps = sigmoid_in_place(view)
    assert torch.equal(heatmaps, expected)
    assert torch.equal(padded[:, 1:10, 2:11, :7], expected)


def test_float32_logits_are_left_alone():
    logits = _logits().float()
    before = logits.clone()
    heatmaps = sigmoid_in_place(logits)
    assert heatmaps.dtype == torch.float16
    assert torch.equal(logits, before)
    assert torch.equal(heatmaps, torch.sigmoid(before).half())


def test_every_float16_value_as_if_computed_in_float32():
    # the in-place float16 sigmoid must round float32's sigmoid exactly once
    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16)
    expected = torch.sigmoid(every.float()).half()
    heatmaps = sigmoid_in_place(every.clone())
    same = (heatmaps == expected) | (torch.isnan(heatmaps) & torch.isnan(expected))
    assert bool(same.all())
