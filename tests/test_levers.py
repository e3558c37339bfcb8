"""The quality levers: loss choice, weight EMA (exact across resume), flip self-ensemble, seed statistics."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from demakeup_dist.data.shards import write_shards
from demakeup_dist.data.synth import synth_dataset
from demakeup_dist.rundir import RunDir
from demakeup_dist.seeds import difference, spread
from demakeup_dist.train.config import TrainConfig, load_config
from demakeup_dist.train.ema import WeightEMA
from demakeup_dist.train.evaluation import evaluate
from demakeup_dist.train.loop import train
from demakeup_dist.train.recipe import CHARBONNIER_EPS, restoration_loss
from demakeup_dist.train.step import plain_state_dict


def test_pixel_losses_and_scale():
    pred = {"demakeup": torch.full((1, 3, 2, 2), 0.5)}
    target = {"demakeup": torch.full((1, 3, 2, 2), 0.2)}
    one = {"demakeup": 1.0}
    assert restoration_loss(pred, target, one, 100.0, "mse")[0].item() == pytest.approx(100 * 0.09)
    assert restoration_loss(pred, target, one, 100.0, "l1")[0].item() == pytest.approx(100 * 0.3)
    charbonnier = restoration_loss(pred, target, one, 1.0, "charbonnier")[0].item()
    assert charbonnier == pytest.approx(math.sqrt(0.09 + CHARBONNIER_EPS**2))
    # At zero error Charbonnier is eps, not 0: it is smooth there, unlike L1.
    assert restoration_loss(target, target, one, 1.0, "charbonnier")[0].item() == pytest.approx(CHARBONNIER_EPS)
    with pytest.raises(ValueError, match="loss 'l2'"):
        restoration_loss(pred, target, one, 1.0, "l2")


def test_psnr_loss_is_minus_the_metric_per_image():
    from demakeup_dist.metrics import psnr

    torch.manual_seed(0)
    target = torch.rand(3, 3, 8, 8)
    pred = (target + torch.randn(3, 3, 8, 8) * torch.tensor([0.01, 0.05, 0.2]).view(3, 1, 1, 1)).clamp(0, 1)
    loss = restoration_loss({"demakeup": pred}, {"demakeup": target}, {"demakeup": 1.0}, 1.0, "psnr")[0]
    assert loss.item() == pytest.approx(-psnr(pred, target).mean().item(), rel=1e-5)
    # Per image, not of the batch's pooled MSE: the clean image weighs as much as the noisy one.
    pooled = 10 * math.log10(((pred - target) ** 2).mean().item())
    assert abs(loss.item() - pooled) > 1


@pytest.mark.parametrize("bad, message", [
    (dict(loss="ssim"), "loss 'ssim': choose one of mse, l1, charbonnier, psnr"),
    (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\)"),
    (dict(ema_decay=0.99, strategy="deepspeed", zero=3), "not with DeepSpeed ZeRO-3"),
])
def test_lever_options_are_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_ema_ramps_up_and_swaps_back_exactly():
    net = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = WeightEMA(net, decay=0.999)
    net.weight.data.fill_(1.0)
    ema.update()  # decay min(0.999, 2 / 11): the first update moves most of the way
    assert ema.shadow["weight"][0, 0].item() == pytest.approx(1 - 2 / 11)
    with ema.swapped():
        assert net.weight[0, 0].item() == pytest.approx(1 - 2 / 11)
    assert torch.equal(net.weight, torch.ones(1, 2))
    restored = WeightEMA(net, decay=0.999)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 1 and torch.equal(restored.shadow["weight"], ema.shadow["weight"])


class _Ramp(torch.nn.Module):
    """Multiplies the image by a left-to-right ramp: its mirror-averaged output is x * (ramp + flipped) / 2."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ramp = torch.linspace(0.0, 1.0, width)

    def forward(self, x):
        return {"demakeup": x * self.ramp}


def test_flip_ensemble_averages_the_mirrored_prediction():
    x = torch.rand(2, 3, 16, 16)
    batch = [{"makeup": x, "non_makeup": x * 0.5}]
    plain, _ = evaluate(_Ramp(16), batch, ("demakeup",), torch.device("cpu"), lambda t: t)
    flip, first = evaluate(_Ramp(16), batch, ("demakeup",), torch.device("cpu"), lambda t: t, flip_ensemble=True)
    assert torch.allclose(first["pred_demakeup"], x * 0.5)  # (ramp + flipped ramp) / 2 = 0.5 everywhere
    assert flip.psnr > 100 and plain.psnr < 40


def test_seed_noise_decides_what_is_clear():
    a, b = spread([30.0, 30.2, 29.8]), spread([30.9, 31.1, 31.0])
    assert str(a) == "30.00 +- 0.20"
    assert difference(a, b).clear and difference(a, b).verdict() == "yes"
    close = spread([30.1, 30.3, 29.9])
    assert not difference(a, close).clear and "within the seed noise" in difference(a, close).verdict()
    assert "one seed" in difference(spread([30.0]), spread([35.0])).verdict()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("levers")
    data = synth_dataset(root / "data", train=8, val=4, test=4, size=32, seed=3, workers=1, progress=False)
    write_shards(data, root / "shards", samples_per_shard=4, workers=1, progress=False)
    return root / "shards"


def ema_of(checkpoint: Path) -> tuple[int, dict[str, torch.Tensor]]:
    """(updates, shadow weights) of the plain-safetensors weight average in a checkpoint folder."""
    from safetensors import safe_open

    with safe_open(str(checkpoint / "ema.safetensors"), framework="pt") as f:
        return int(f.metadata()["updates"]), {k: f.get_tensor(k) for k in f.keys()}


def test_ema_is_checkpointed_resumed_exactly_and_saved_as_best(shards, tmp_path, one_thread):
    config = load_config("p1", epochs=3, batch_size=4, wandb="disabled", num_workers=0, ema_decay=0.9,
                         loss="l1", keep_checkpoints=10, model_args={"residual": True})
    reference = tmp_path / "reference"
    results = train(config, shards, reference)
    # best.safetensors holds the EMA of the best epoch's checkpoint, not the raw weights.
    step = {1: 2, 2: 4, 3: 6}[results["best_epoch"]]
    _, saved = ema_of(RunDir(reference).checkpoints_dir / f"step-{step:08d}")
    best = load_file(str(RunDir(reference).best_weights))
    assert all(torch.equal(best[k], saved[k]) for k in best)
    raw = plain_state_dict(load_file(str(RunDir(reference).checkpoint(step) / "model.safetensors")))
    assert any(not torch.equal(best[k], raw[k]) for k in best)
    # Resume from the end of epoch 1 in a fresh run dir: the same raw weights and the same EMA at the end.
    resumed = tmp_path / "resumed"
    RunDir(resumed).checkpoints_dir.mkdir(parents=True)
    shutil.copytree(RunDir(reference).checkpoint(2), RunDir(resumed).checkpoint(2))
    shutil.copy(RunDir(reference).config_file, RunDir(resumed).config_file)
    train(config, shards, resumed, resume="latest")
    a, b = load_file(str(RunDir(reference).final_weights)), load_file(str(RunDir(resumed).final_weights))
    assert all(torch.equal(a[k], b[k]) for k in a)
    (updates_a, last_a), (updates_b, last_b) = (ema_of(RunDir(run).checkpoint(6))
                                                for run in (reference, resumed))
    assert updates_a == updates_b == 6
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
    assert not list((RunDir(resumed).checkpoint(6)).glob("custom_checkpoint_*"))  # no pickled objects


@pytest.mark.parametrize("model", ["p1", "p2", "p3", "p4"])
def test_recommended_configs_are_the_brief_plus_levers(model):
    from demakeup_dist.experiment import RECOMMENDED_DIR

    brief, recommended = load_config(model), load_config(model, RECOMMENDED_DIR / f"{model}.yaml")
    assert recommended.model_args == {**brief.model_args, "residual": True}
    changed = {k for k, v in recommended.to_dict().items() if brief.to_dict()[k] != v}
    assert changed <= {"model_args", "lr", "loss", "ema_decay", "flip_ensemble"}, changed
