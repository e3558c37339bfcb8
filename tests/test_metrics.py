"""PSNR / SSIM against analytic cases and an independent numpy SSIM (TF's formula written out)."""

import math

import numpy as np
import pytest
import torch

from demakeup_dist.metrics import MetricAccumulator, bicubic_upsample, psnr, ssim

C1, C2 = 0.01**2, 0.03**2


def _gauss_window() -> np.ndarray:
    """TF's _fspecial_gauss(11, 1.5) in float64: exp(-(di^2+dj^2)/(2*1.5^2)) normalised."""
    d = np.arange(11) - 5.0
    g = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * 1.5**2))
    return g / g.sum()


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two (C, H, W) float64 images by explicit VALID sliding windows, no convolution."""
    w = _gauss_window()
    channels, h, wd = x.shape
    per_channel = []
    for c in range(channels):
        values = []
        for i in range(h - 10):
            for j in range(wd - 10):
                a, b = x[c, i : i + 11, j : j + 11], y[c, i : i + 11, j : j + 11]
                mu_a, mu_b = (w * a).sum(), (w * b).sum()
                var_a = (w * a * a).sum() - mu_a**2
                var_b = (w * b * b).sum() - mu_b**2
                cov = (w * a * b).sum() - mu_a * mu_b
                lum = (2 * mu_a * mu_b + C1) / (mu_a**2 + mu_b**2 + C1)
                values.append(lum * (2 * cov + C2) / (var_a + var_b + C2))
        per_channel.append(np.mean(values))
    return float(np.mean(per_channel))


# ---------------------------------------------------------------- PSNR


@pytest.mark.parametrize("d", [0.1, 0.05, 1 / 255])
def test_psnr_constant_offset_is_20_log10_of_one_over_d(d):
    target = torch.full((1, 3, 8, 9), 0.25)
    got = psnr(target + d, target)
    assert got.dtype == torch.float32 and got.shape == (1,)
    assert got.item() == pytest.approx(20 * math.log10(1 / d), abs=1e-4)


def test_psnr_max_val_scales():
    target = torch.zeros(1, 1, 4, 4)
    assert psnr(target + 25.5, target, max_val=255.0).item() == pytest.approx(20.0, abs=1e-4)


def test_psnr_identical_is_inf_like_tf():
    x = torch.rand(2, 3, 5, 5)
    assert torch.isinf(psnr(x, x)).all()


def test_psnr_is_per_image_not_pooled():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[0] += 0.1
    pred[1] += 0.01
    got = psnr(pred, target)
    assert got.tolist() == pytest.approx([20.0, 40.0], abs=1e-4)
    pooled = 10 * math.log10(1 / ((0.1**2 + 0.01**2) / 2))
    assert got.mean().item() != pytest.approx(pooled, abs=0.1)


def test_psnr_bf16_input_gives_float32_close_to_fp32():
    torch.manual_seed(0)
    target, pred = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    ref = psnr(pred, target)
    got = psnr(pred.bfloat16(), target.bfloat16())
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=0.05)


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_shape_errors_are_clear(fn):
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))
    with pytest.raises(ValueError, match="batch dimension"):
        fn(torch.rand(3, 16, 16), torch.rand(3, 16, 16))


# ---------------------------------------------------------------- SSIM


def test_ssim_identical_is_one():
    x = torch.rand(2, 3, 20, 23)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)


@pytest.mark.parametrize("mu1, mu2", [(0.01, 0.05), (0.3, 0.7)])
def test_ssim_constant_images_is_luminance_term_only(mu1, mu2):
    """Dark means make C1 matter (0.407 with it, 0.385 without). The tolerance covers float32
    cancellation in var = E[x^2] - mu^2 (about 1e-7 against C2 = 9e-4), which TF has as well."""
    a, b = torch.full((1, 3, 16, 16), mu1), torch.full((1, 3, 16, 16), mu2)
    expected = (2 * mu1 * mu2 + C1) / (mu1**2 + mu2**2 + C1)  # c*s = C2 / C2 = 1
    assert ssim(a, b).item() == pytest.approx(expected, abs=3e-4)


def test_ssim_one_window_matches_hand_formula():
    """11x11 image = exactly one window: SSIM is the Gaussian-weighted formula at the centre."""
    rng = np.random.default_rng(1)
    x = rng.random((1, 11, 11))
    y = np.clip(x + 0.1 * rng.standard_normal((1, 11, 11)), 0, 1)
    w = _gauss_window()
    mx, my = (w * x[0]).sum(), (w * y[0]).sum()
    vx, vy = (w * (x[0] - mx) ** 2).sum(), (w * (y[0] - my) ** 2).sum()
    cov = (w * (x[0] - mx) * (y[0] - my)).sum()
    expected = (2 * mx * my + C1) * (2 * cov + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
    got = ssim(torch.from_numpy(x)[None].float(), torch.from_numpy(y)[None].float())
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_ssim_negated_around_mean_is_analytic():
    """y = 2*mu - x (one window) has the same mean and variance and covariance -var:
    SSIM = (C2 - 2 var) / (C2 + 2 var)."""
    rng = np.random.default_rng(2)
    x = 0.5 + 0.2 * (rng.random((1, 11, 11)) - 0.5)
    w = _gauss_window()
    mu = (w * x[0]).sum()
    y = 2 * mu - x
    var = (w * (x[0] - mu) ** 2).sum()
    got = ssim(torch.from_numpy(x)[None].float(), torch.from_numpy(y)[None].float())
    assert got.item() == pytest.approx((C2 - 2 * var) / (C2 + 2 * var), abs=1e-4)
    assert got.item() < 0


def test_ssim_matches_sliding_window_reference_per_image():
    rng = np.random.default_rng(3)
    x = rng.random((2, 3, 13, 15))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    got = ssim(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    expected = [_ssim_reference(x[i], y[i]) for i in range(2)]
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx(expected, abs=1e-5)


def test_ssim_symmetric_bounded_and_decreasing_with_noise():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 24, 24)
    noise = torch.randn_like(x)
    values = [ssim((x + s * noise).clamp(0, 1), x).item() for s in (0.01, 0.05, 0.2)]
    assert values[0] > values[1] > values[2]
    assert all(v <= 1.0 for v in values)
    y = (x + 0.1 * noise).clamp(0, 1)
    assert ssim(x, y).item() == pytest.approx(ssim(y, x).item(), abs=1e-6)


def test_ssim_bf16_input_computed_in_float32():
    x = torch.rand(1, 3, 16, 16)
    got = ssim(x.bfloat16(), x.bfloat16())
    assert got.dtype == torch.float32 and got.item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_too_small_image_is_clear_error():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 10, 32), torch.rand(1, 3, 10, 32))


# ---------------------------------------------------------------- bicubic baseline


def test_bicubic_upsample_shape_range_and_constant():
    x = torch.rand(2, 3, 7, 9)
    up = bicubic_upsample(x)
    assert up.shape == (2, 3, 28, 36) and up.dtype == torch.float32
    assert up.min() >= 0 and up.max() <= 1
    const = torch.full((1, 3, 5, 5), 0.4)
    assert torch.allclose(bicubic_upsample(const), torch.full((1, 3, 20, 20), 0.4), atol=1e-6)


def test_bicubic_upsample_clamps_overshoot():
    step = torch.zeros(1, 1, 4, 8)
    step[..., 4:] = 1.0
    raw = torch.nn.functional.interpolate(step, scale_factor=4, mode="bicubic", align_corners=False)
    assert raw.max() > 1 and raw.min() < 0  # the overshoot exists, so the clamp is doing something
    up = bicubic_upsample(step)
    assert up.max() == 1.0 and up.min() == 0.0


# ---------------------------------------------------------------- accumulator


class _Sent(Exception):
    """Stops a rank's reduce after it handed over its local tensor."""


def _simulated_all_reduce(accs: list[MetricAccumulator]):
    """What an all-reduce(sum) over one accumulator per rank gives every rank."""
    sent = []

    def capture(t):
        sent.append(t.clone())
        raise _Sent

    for acc in accs:
        with pytest.raises(_Sent):
            acc.reduce(capture)
    assert all(t.dtype == torch.float64 and t.shape == sent[0].shape for t in sent)
    total = torch.stack(sent).sum(dim=0)
    return [acc.reduce_with_counts(lambda t: total.clone()) for acc in accs], sent


def test_accumulator_uneven_ranks_is_exact_mean_over_images():
    """Ranks with 3 and 1 images: sum/count (25.0), not the mean of rank means (30.0)."""
    ranks = [MetricAccumulator(["psnr", "ssim"]) for _ in range(2)]
    ranks[0].add("psnr", torch.tensor([10.0, 20.0]))
    ranks[0].add("psnr", torch.tensor([30.0]))
    ranks[1].add("psnr", torch.tensor([40.0]))
    ranks[0].add("ssim", torch.tensor([0.5, 0.5, 0.5]))
    ranks[1].add("ssim", torch.tensor([0.9]))
    results, _ = _simulated_all_reduce(ranks)
    for means, counts in results:
        assert means == pytest.approx({"psnr": 25.0, "ssim": 0.6})
        assert counts == {"psnr": 4, "ssim": 4}


def test_accumulator_rank_with_no_images_sends_zeros_and_inf_propagates():
    empty, busy = MetricAccumulator(["psnr"]), MetricAccumulator(["psnr"])
    busy.add("psnr", torch.tensor([float("inf"), 30.0]))
    results, sent = _simulated_all_reduce([empty, busy])
    assert sent[0].tolist() == [0.0, 0.0]
    assert all(math.isinf(means["psnr"]) and counts["psnr"] == 2 for means, counts in results)


def test_accumulator_sums_in_float64():
    acc = MetricAccumulator(["psnr"])
    for _ in range(1000):
        acc.add("psnr", torch.tensor([30.1], dtype=torch.float32))
    assert acc.reduce()["psnr"] == pytest.approx(float(torch.tensor(30.1)), abs=1e-9)


def test_accumulator_errors():
    acc = MetricAccumulator(["psnr"])
    with pytest.raises(KeyError, match="unknown metric 'ssim'"):
        acc.add("ssim", torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        acc.add("psnr", torch.ones(2, 2))
    with pytest.raises(ValueError, match="no image was evaluated"):
        acc.reduce()
    with pytest.raises(ValueError, match="distinct"):
        MetricAccumulator(["psnr", "psnr"])
