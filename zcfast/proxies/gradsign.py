"""GradSign (Zhang & Jia, ICLR 2022): how much the per-sample gradients agree in sign.

Proxy (registered on import, built in):

- ``gradsign``: Σ over counted weights θ of |Σ_i sign(∂ℓᵢ/∂θ)| (higher is better), from the need
  ``per_sample_grads`` (:mod:`zcfast.proxies.suite_zero`), reduced by :func:`zcfast.ops.sign_sum`.

Official code read: cmu-catalyst/GradSign@26412be8, ``naswot-code/gradsign.py`` (and its copy
``zero-cost-nas-code/gradsign.py``), ``get_grad_conflict``:

- the network stays in train mode (it is never switched to eval), and each sample i runs its
  own forward ``net(inputs[[i]])`` and backward of ``cross_entropy(out, targets[[i]])``: BatchNorm
  normalises over that **one** image (its H·W positions). ``per_sample_grads`` reproduces this
  (not one batched forward with per-sample backwards, whose BatchNorm statistics are the
  batch's: other numbers). The module backend (any ``nn.Module``) runs one forward of
  ``x[i:i+1]`` per sample on a private train-mode copy: an arbitrary model may couple samples
  in ways it cannot see. The stacked NAS-Bench-201 backend (``zcfast.batched``), where every
  layer is known, runs ONE forward of the batch with each BatchNorm per sample (instance
  normalisation with BatchNorm's affine and eps: the same numbers as a forward of the image
  alone), one backward of the summed per-sample losses, and each layer's per-sample weight
  gradients from its input and output gradient; equal to the loop to float32 rounding
  (tests/test_batched_suite_zero.py), ``ZCFAST_BATCHED_PER_SAMPLE=loop`` runs the loop there;
- gradients of the ``weight`` of every Conv2d/Linear (``isinstance``), a weight the loss does not
  reach contributing zeros; flattened and concatenated, ``np.sign`` (sign(0) = 0), summed over
  samples, ``abs``, then ``np.nansum``: a weight element whose gradient is NaN for *any* sample
  is dropped (its column sum is NaN). zcfast zeroes such columns before ``ops.sign_sum`` (whose
  contract counts a NaN entry as sign 0, not as a dropped column), which gives the same sum;
- the official sums in float32 (exact while the total stays below 2²⁴); ``ops.sign_sum`` sums in
  float64, exact for any network (a deviation only where the official float32 total rounds);
- official batch 128 CIFAR images. A model whose train-mode forward cannot take one sample
  (e.g. BatchNorm1d after a global pool: one value per channel) is undefined, as the official
  crashes; zcfast reports the forward's error as the reason.
"""
from __future__ import annotations

import torch

from zcfast import ops
from zcfast.proxies.registry import PassContext, ProxyResult, register_proxy

__all__ = ["gradsign", "gradsign_reduce"]


def gradsign_reduce(grads: list[torch.Tensor]) -> torch.Tensor:
    """Per tensor Σ_θ |Σ_i sign(g[i, θ])| of T per-sample gradients ``[N, *W.shape]`` -> ``[T]``
    float64, with the official ``np.nansum``: an element (column θ) whose gradient is NaN for any
    sample contributes 0 (``ops.sign_sum`` alone would count only that sample's entry as 0)."""
    clean = []
    for g in grads:
        nan = torch.isnan(g)
        if bool(nan.any()):
            g = g.masked_fill(nan.any(dim=0, keepdim=True), 0.0)   # drop the whole column, as nansum
        clean.append(g)
    return ops.sign_sum(clean)


@register_proxy("gradsign", needs=("per_sample_grads",), _builtin=True)
def gradsign(ctx: PassContext) -> ProxyResult:
    """Σ over counted weights of Σ_θ |Σ_i sign(∂ℓᵢ/∂θ)|, per-sample gradients from one train-mode
    forward per sample (BatchNorm over one image, as the official loop). ``per_layer``: each
    weight's term."""
    grads = ctx.data["per_sample_grads"]
    if not grads:
        return ProxyResult("gradsign", float("nan"), None, None, "gradsign: the model has no counted weight")
    sums = gradsign_reduce(grads).tolist()
    names = ctx.layer_names
    per = {(names[t] if t < len(names) else f"layer{t}"): float(s) for t, s in enumerate(sums)}
    return ProxyResult("gradsign", float(sum(sums)), per)
