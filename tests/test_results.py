"""The one shape of evaluation results: JSON round trips, the readable flat names, clear errors."""

import json

import pytest

from demakeup_dist.results import EpochRecord, Evaluation, Quality, RunResults

P4 = Evaluation({"demakeup": Quality(25.0, 0.8), "sr": Quality(27.0, 0.85)},
                {"demakeup": Quality(24.0, 0.75), "sr": Quality(26.5, 0.84)})


def test_results_json_shape_and_round_trip():
    results = RunResults("p4", "test", 3, P4)
    data = json.loads(json.dumps(results.to_dict()))
    assert data == {"model": "p4", "split": "test", "best_epoch": 3,
                    "metrics": {"demakeup": {"psnr": 25.0, "ssim": 0.8}, "sr": {"psnr": 27.0, "ssim": 0.85}},
                    "baselines": {"demakeup": {"name": "identity", "psnr": 24.0, "ssim": 0.75},
                                  "sr": {"name": "bicubic", "psnr": 26.5, "ssim": 0.84}}}
    assert RunResults.from_dict(data) == results and results.evaluation.psnr == 25.0


def test_epoch_record_round_trip_and_flat_names():
    record = EpochRecord(2, 20, 0.5, 1e-3, 3.0, 4.0, P4)
    assert EpochRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert record.flat() == {
        "epoch": 2, "step": 20, "train_loss": 0.5, "lr": 1e-3, "train_s": 3.0, "epoch_s": 4.0,
        "val/demakeup/psnr": 25.0, "val/demakeup/ssim": 0.8, "val/sr/psnr": 27.0, "val/sr/ssim": 0.85,
        "val/baseline/demakeup/psnr": 24.0, "val/baseline/demakeup/ssim": 0.75,
        "val/baseline/sr/psnr": 26.5, "val/baseline/sr/ssim": 0.84}
    assert str(P4) == ("demakeup PSNR 25.000 dB SSIM 0.8000 (identity 24.000 dB, 0.7500), "
                       "sr PSNR 27.000 dB SSIM 0.8500 (bicubic 26.500 dB, 0.8400)")


def test_another_shape_is_refused_naming_the_file():
    older = {"model": "p1", "split": "test", "best_epoch": 1, "psnr": 25.0, "ssim": 0.8, "identity_psnr": 24.0}
    with pytest.raises(ValueError, match=r"^runs/p1/results.json: not a run's results .*'metrics'.*retrain"):
        RunResults.from_dict(older, "runs/p1/results.json")
    with pytest.raises(ValueError, match="task 'hr': choose one of demakeup, sr"):
        Evaluation.from_dict({"metrics": {"demakeup": {"psnr": 1, "ssim": 1}, "hr": {"psnr": 1, "ssim": 1}}})
    with pytest.raises(ValueError, match="needs the demakeup head"):
        Evaluation({"sr": Quality(1.0, 1.0)})
