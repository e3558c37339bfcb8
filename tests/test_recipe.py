"""The brief's recipe: LR schedule (TF create_optimizer), AdamW groups, loss, config loading."""


import pytest
import torch
import yaml
from torch import nn

from demakeup_dist.choices import MODEL_NAMES
from demakeup_dist.train.config import BRIEF_LR, TrainConfig, load_config, read_yaml
from demakeup_dist.train.recipe import lr_factor, make_optimizer, make_scheduler, param_groups, restoration_loss


def tf_schedule(step, init_lr, total, warmup):
    """TF's WarmUp(PolynomialDecay(init_lr, decay_steps=total, end=0, power=1)) written out by hand."""
    if step < warmup:
        return init_lr * step / warmup
    return init_lr * (1 - min(step, total) / total)


@pytest.mark.parametrize("step", [0, 1, 49, 99, 100, 101, 500, 999, 1000])
def test_lr_matches_tf_formula(step):
    total, warmup, init_lr = 1000, 100, 1e-2
    model = nn.Linear(2, 2)
    opt = make_optimizer(model, TrainConfig(lr=init_lr))
    sched = make_scheduler(opt, total, 0.1)
    for _ in range(step):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(tf_schedule(step, init_lr, total, warmup), abs=1e-12)


def test_lr_drops_to_ninety_percent_after_warmup_like_tf():
    # TF's decay runs over the whole schedule, so the first post-warm-up LR is 0.9 * init_lr.
    assert lr_factor(99, 1000, 100) == pytest.approx(0.99)
    assert lr_factor(100, 1000, 100) == pytest.approx(0.9)
    assert lr_factor(1000, 1000, 100) == 0.0


def test_no_weight_decay_on_conv_biases_only():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(1, 4), nn.ConvTranspose2d(4, 3, 2, 2))
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids = lambda params: {id(p) for p in params}
    assert ids(no_decay["params"]) == {id(model[0].bias), id(model[2].bias)}
    # Norm offsets are "beta" in TF, not "bias": they are decayed there, so here too.
    assert id(model[1].bias) in ids(decay["params"]) and id(model[1].weight) in ids(decay["params"])


def test_adamw_hyperparameters():
    opt = make_optimizer(nn.Linear(2, 2), TrainConfig())
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-6


def test_loss_is_mse_times_100_and_weighted_sum():
    pred = {"demakeup": torch.full((2, 3, 4, 4), 0.5), "sr": torch.full((2, 3, 16, 16), 0.2)}
    target = {"demakeup": torch.full((2, 3, 4, 4), 0.3), "sr": torch.zeros(2, 3, 16, 16)}
    total, terms = restoration_loss(pred, target, {"demakeup": 1.0, "sr": 2.0}, 100.0)
    assert terms["demakeup"].item() == pytest.approx(0.04 * 100)
    assert terms["sr"].item() == pytest.approx(0.04 * 100)
    assert total.item() == pytest.approx(4.0 + 2 * 4.0)


def test_config_precedence_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: p2\nepochs: 7\nlr: 0.001\n")
    cfg = load_config("p2", path, epochs=3, lr=None)
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (3, 0.001, 64)
    path.write_text("model: p2\nepoch: 7\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\]"):
        read_yaml(path)
    with pytest.raises(ValueError, match="is for model 'p2'"):
        load_config("p3", _yaml(tmp_path, "model: p2\n"))
    with pytest.raises(ValueError, match="precision 'int8': choose one of auto, bf16, fp16, fp32"):
        TrainConfig(precision="int8")


def _yaml(tmp_path, text):
    path = tmp_path / "other.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("folder", ["brief", "recommended"])
def test_shipped_configs_are_what_training_reads(model, folder):
    """Every key of the shipped YAML reaches the config and the network it builds (the defaults alone would
    differ: model_args, the recommended lr); the brief's files hold the brief's recipe."""
    from demakeup_dist.models import build_model
    from demakeup_dist.resources import model_config, recommended_configs

    path = model_config(model) if folder == "brief" else recommended_configs() / f"{model}.yaml"
    raw = yaml.safe_load(path.read_text())
    cfg = load_config(model, path)
    assert raw["model_args"] and cfg.model_args == raw["model_args"] != TrainConfig(model=model).model_args
    for key, value in raw.items():
        assert getattr(cfg, key) == (float(value) if isinstance(getattr(cfg, key), float) else value), key
    if folder == "brief":
        assert (cfg.epochs, cfg.batch_size, cfg.lr) == (300, 64, BRIEF_LR)
    else:
        assert cfg.model_args["residual"] is True and cfg.lr < BRIEF_LR
    net = build_model(model, **cfg.model_args)
    channels = {m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)}
    assert set(raw["model_args"].get("decoder_channels", [])) <= channels
    assert raw["model_args"].get("base_channels", 64) in channels


@pytest.mark.parametrize("zero", [1, 2, 3])
def test_deepspeed_config_maps_the_run(zero):
    from demakeup_dist.train.distributed import deepspeed_config

    ds = deepspeed_config(TrainConfig(strategy="deepspeed", zero=zero, grad_clip_norm=0.5), 8, "bf16")
    assert ds["zero_optimization"]["stage"] == zero
    assert ds["train_micro_batch_size_per_gpu"] == 8 and ds["gradient_accumulation_steps"] == 1
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}


def test_deepspeed_on_cpu_is_refused_clearly():
    from demakeup_dist.train.distributed import make_accelerator

    if torch.cuda.is_available():
        pytest.skip("DeepSpeed runs on this machine's GPUs")
    with pytest.raises(ValueError, match="needs CUDA GPUs; on CPU use --strategy ddp"):
        make_accelerator(TrainConfig(strategy="deepspeed"))
