"""``zcfast score`` command."""
from __future__ import annotations

import torch
import torch.nn as nn

from zcfast.cli import main


def tiny(num_classes: int = 10) -> nn.Module:
    """A small CNN for ``--model test_proxies_cli:tiny``."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def test_score_nb201_index_and_string(capsys):
    torch.set_num_threads(1)
    arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    assert main(["score", "0", arch, "--batch-size", "8", "--proxies", "snip,synflow,jacob_cov"]) == 0
    out = capsys.readouterr().out
    assert "#0 |" in out and arch in out and "ln(synflow)" in out and "jacob_cov" in out


def test_score_model_and_bad_input(capsys):
    torch.set_num_threads(1)
    assert main(["score", "--model", "test_proxies_cli:tiny", "--batch-size", "8", "--proxies", "all"]) == 0
    assert "test_proxies_cli:tiny" in capsys.readouterr().out
    assert main(["score", "--proxies", "snip,foo", "--batch-size", "8"]) == 2
    assert "unknown proxy 'foo'" in capsys.readouterr().err
    assert main(["score", "|bad~0|", "--batch-size", "8"]) == 2
    assert main(["score", "--model", "no_such_module_x:f"]) == 2
    assert "cannot import" in capsys.readouterr().err
