"""The waveform stage's channels-first convolutions, GroupNorm and weight-norm folding against torch's modules."""

import numpy as np
import pytest
import torch

from clvp_jax.waveform.conv import Conv1d, ConvTranspose1d, GroupNorm, fold_weight_norm

X = np.random.default_rng(0).standard_normal((2, 6, 17)).astype(np.float32)


def _params(module: torch.nn.Module) -> dict:
    return {"weight": module.weight.detach().numpy(), "bias": module.bias.detach().numpy()}


@pytest.mark.parametrize(
    "k, stride, pad, dilation, groups, mode",
    [(3, 1, 1, 1, 1, "zeros"), (7, 2, 3, 1, 1, "reflect"), (3, 1, 2, 2, 2, "zeros")],
)
def test_conv1d_matches_torch(k, stride, pad, dilation, groups, mode):
    torch.manual_seed(0)
    ref = torch.nn.Conv1d(6, 4, k, stride=stride, padding=pad, dilation=dilation, groups=groups, padding_mode=mode)
    ours = Conv1d(4, k, stride, pad, dilation, groups, padding_mode=mode).apply({"params": _params(ref)}, X)
    # One fp32 convolution of <= 21 terms of O(1): a few ulps of the summation order.
    np.testing.assert_allclose(ours, ref(torch.tensor(X)).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "k, stride, pad, out_pad, dilation", [(8, 4, 2, 0, 1), (16, 8, 4, 0, 1), (5, 3, 1, 2, 1), (4, 2, 1, 0, 2)]
)
def test_conv_transpose1d_matches_torch(k, stride, pad, out_pad, dilation):
    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose1d(6, 5, k, stride=stride, padding=pad, output_padding=out_pad, dilation=dilation)
    ours = ConvTranspose1d(5, k, stride, pad, out_pad, dilation).apply({"params": _params(ref)}, X)
    want = ref(torch.tensor(X)).detach().numpy()
    assert ours.shape == want.shape
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-6)  # as above


def test_group_norm_matches_torch():
    torch.manual_seed(0)
    ref = torch.nn.GroupNorm(3, 6)
    ref.weight.data.uniform_(0.5, 1.5)
    ref.bias.data.normal_()
    ours = GroupNorm(3).apply({"params": {"scale": ref.weight.detach().numpy(), "bias": ref.bias.detach().numpy()}}, X)
    # Element-wise after fp32 statistics over 34 values: ~1e-6.
    np.testing.assert_allclose(ours, ref(torch.tensor(X)).detach().numpy(), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("transpose", [False, True])
def test_fold_weight_norm_matches_torch(transpose):
    torch.manual_seed(0)
    conv = (torch.nn.ConvTranspose1d if transpose else torch.nn.Conv1d)(6, 5, 4)
    conv = torch.nn.utils.parametrizations.weight_norm(conv)
    conv.parametrizations.weight.original0.data.uniform_(0.5, 1.5)  # g, far from ||v||
    g = conv.parametrizations.weight.original0.detach().numpy()
    v = conv.parametrizations.weight.original1.detach().numpy()
    assert g.shape[0] == (6 if transpose else 5)  # dim=0: per INPUT channel for the transposed conv
    # float64 fold rounded once vs torch's float32 fold: 1-2 ulps of O(1) weights.
    np.testing.assert_allclose(fold_weight_norm(g, v), conv.weight.detach().numpy(), rtol=3e-7, atol=1e-7)
    with pytest.raises(ValueError, match="weight_g"):
        fold_weight_norm(g[:, :, 0], v)
