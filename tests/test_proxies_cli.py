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


def test_score_batches_feeds_multi_batch_proxies(capsys):
    """``--batches 2``: zico reads both paper batches, a single-batch proxy the first."""
    import zcfast
    from zcfast.data import paper_batch, paper_batches

    torch.set_num_threads(1)
    assert main(["score", "--model", "test_proxies_cli:tiny", "--batch-size", "8", "--batches", "2",
                 "--proxies", "zico,snip"]) == 0
    out = capsys.readouterr().out
    assert "8 cifar10 images x 2 mini-batches" in out
    row = next(line for line in out.splitlines() if line.startswith("test_proxies_cli:tiny")).split()
    torch.manual_seed(0)
    want = zcfast.score(tiny(), None, None, ("zico", "snip"), batches=paper_batches("cifar10", 8, 42, 2))
    x, y = paper_batch("cifar10", 8, 42)
    assert float(row[1]) == float(f"{want['zico']:.4f}")
    assert float(row[2]) == float(f"{zcfast.score(tiny(), x, y, ('snip',))['snip']:.4f}")
    assert main(["score", "--model", "test_proxies_cli:tiny", "--batch-size", "8", "--batches", "2",
                 "--input-shape", "3,16,16", "--proxies", "zico"]) == 0
    assert "x 2 mini-batches" in capsys.readouterr().out
