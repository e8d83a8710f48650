"""Change a trained Mixer's input resolution (``mlp-mixer resize``).

Only the token-mixing MLP depends on the resolution: its input width is S, the number of patches. The stem,
LayerNorms, channel mixing and head are copied unchanged. The ways to build the new token MLPs:

- ``"blockdiag"``, the paper's method (fine-tuning section of arXiv 2105.01601): for Kh x Kw times more
  patches (Kh, Kw integers), ``token_dim`` grows to Kh*Kw*token_dim and both token-mixing Dense layers become
  block-diagonal with copies of the original, one per sub-grid of h x w patches. The model then computes the
  original function on each sub-grid exactly: the same tokens per sub-grid (stem, LayerNorms and channel
  mixing act per token; token mixing only within a sub-grid), and, by mean pooling over equal-sized
  sub-grids, pooled features and logits that are the mean over the sub-grids'. Which patches form a
  sub-grid is a choice the paper leaves open; here sub-grid (a, b) is the *contiguous* block
  ``[a*h:(a+1)*h, b*w:(b+1)*w]`` of the new (Kh*h, Kw*w) grid: an image made of Kh x Kw tiles of the
  original size is processed exactly as each tile on its own.
- ``"blockdiag-strided"``: the same, with *strided* sub-grids: sub-grid (a, b) is the patches
  ``(i*Kh + a, j*Kw + b)``, every K-th patch, so each sub-grid spans the whole image. For an image
  upsampled by K it is a coarse view of the whole image in the original layout, which is why it starts
  fine-tuning much closer to the original accuracy (docs/weights.md has the measurement).
- ``"interpolate"``: keep ``token_dim`` and resample the token-mixing weights bilinearly over the (h, w)
  patch grid (fc1's input axis and fc2's output axis), for any size. fc1 is scaled by S/S' so that the
  sum over the new grid approximates the sum over the old one for an upsampled image.

``"auto"`` picks ``"blockdiag-strided"`` when the new grid is an integer multiple of the old one on both axes
(it measured best, before and after fine-tuning), else ``"interpolate"``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from ..model.mixer import MLPMixer, _pair
from .checkpoint import save_checkpoint
from .load import load_model
from .options import RESIZE_METHODS as METHODS


def _new_grid(model: MLPMixer, image_size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = _pair(image_size, "image_size")
    if h % model.patch_size or w % model.patch_size:
        raise ValueError(f"image_size {image_size} is not divisible by the model's patch_size {model.patch_size}")
    return h // model.patch_size, w // model.patch_size


def _blockdiag_factors(old: tuple[int, int], new: tuple[int, int]) -> tuple[int, int] | None:
    """(Kh, Kw) when the new grid is an integer multiple (>= 1) of the old one on both axes, else None."""
    if all(n % o == 0 for o, n in zip(old, new, strict=True)):
        return new[0] // old[0], new[1] // old[1]
    return None


def subgrid_tokens(grid: tuple[int, int], k: tuple[int, int], strided: bool = False) -> torch.Tensor:
    """Where each sub-grid's tokens sit in the new (Kh*h, Kw*w) grid: (Kh*Kw, h*w) row-major token indices.

    Row g = a*Kw + b is sub-grid (a, b); column i*w + j is its local patch (i, j). Contiguous blocks put it at
    (a*h + i, b*w + j) (a tile of the image); strided ones at (i*Kh + a, j*Kw + b) (every K-th patch).
    """
    (h, w), (kh, kw) = grid, k
    a, b, i, j = torch.meshgrid(torch.arange(kh), torch.arange(kw), torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = (i * kh + a, j * kw + b) if strided else (a * h + i, b * w + j)
    return (rows * (kw * w) + cols).reshape(kh * kw, h * w)


def _blockdiag_token_mlp(
    fc1_w: torch.Tensor,
    fc1_b: torch.Tensor,
    fc2_w: torch.Tensor,
    fc2_b: torch.Tensor,
    grid: tuple[int, int],
    k: tuple[int, int],
    strided: bool,
) -> tuple[torch.Tensor, ...]:
    """Block-diagonal copies: hidden block g reads and writes only the tokens of sub-grid g."""
    index = subgrid_tokens(grid, k, strided)
    groups, num_patches = index.shape
    token_dim, s_new = fc1_w.shape[0], groups * num_patches
    new_fc1 = fc1_w.new_zeros(groups * token_dim, s_new)  # (D_S', S')
    new_fc2 = fc2_w.new_zeros(s_new, groups * token_dim)  # (S', D_S')
    new_b2 = fc2_b.new_zeros(s_new)  # fc2's bias is per output token
    for g, tokens in enumerate(index):
        hidden = slice(g * token_dim, (g + 1) * token_dim)
        new_fc1[hidden, tokens] = fc1_w
        new_fc2[tokens, hidden] = fc2_w
        new_b2[tokens] = fc2_b
    return new_fc1, fc1_b.repeat(groups), new_fc2, new_b2


def _resample(x: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling of (N, h*w) over the (h, w) grid -> (N, h'*w'); antialiased when shrinking."""
    n = x.shape[0]
    shrink = new_grid[0] < grid[0] or new_grid[1] < grid[1]
    image = x.reshape(n, 1, *grid).float()  # (N, h*w) -> (N, 1, h, w): row-major tokens, h outer
    out = F.interpolate(image, size=new_grid, mode="bilinear", align_corners=False, antialias=shrink)
    return out.reshape(n, new_grid[0] * new_grid[1]).to(x.dtype)


def _interpolated_token_mlp(
    fc1_w: torch.Tensor,
    fc1_b: torch.Tensor,
    fc2_w: torch.Tensor,
    fc2_b: torch.Tensor,
    grid: tuple[int, int],
    new_grid: tuple[int, int],
) -> tuple[torch.Tensor, ...]:
    scale = (grid[0] * grid[1]) / (new_grid[0] * new_grid[1])  # keep fc1's pre-activations' scale: sum over S'
    new_fc1 = _resample(fc1_w, grid, new_grid) * scale  # (D_S, S) -> (D_S, S')
    new_fc2 = _resample(fc2_w.t(), grid, new_grid).t()  # (S, D_S) -> (S', D_S)
    new_b2 = _resample(fc2_b[None], grid, new_grid)[0]  # (S,) -> (S',)
    return new_fc1, fc1_b.clone(), new_fc2.contiguous(), new_b2


def resize_model(model: MLPMixer, image_size: int | tuple[int, int], method: str = "auto") -> MLPMixer:
    """A new Mixer for ``image_size`` that reuses ``model``'s weights (``model`` is not modified).

    Args:
        model: a trained Mixer.
        image_size: the new input size, an int or (height, width); divisible by ``model.patch_size``.
        method: ``"blockdiag"`` (the paper's: exact on each contiguous sub-grid, i.e. tile; needs an integer
            ratio of patch grids per axis), ``"blockdiag-strided"`` (exact on each strided sub-grid),
            ``"interpolate"`` (bilinear over the patch grid, any size) or ``"auto"`` (blockdiag-strided when
            the ratio allows it, else interpolate).

    Returns:
        The resized model, on the same device and dtype, in the same train/eval mode.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    grid, new_grid = model.grid_size, _new_grid(model, image_size)
    factors = _blockdiag_factors(grid, new_grid)
    if method == "auto":
        method = "blockdiag-strided" if factors is not None else "interpolate"
    if method.startswith("blockdiag") and factors is None:
        raise ValueError(
            f"blockdiag needs the new patch grid {new_grid} to be an integer multiple of the old grid {grid} "
            "on each axis; use --method interpolate"
        )
    token_dim = model.token_dim * factors[0] * factors[1] if method.startswith("blockdiag") else model.token_dim

    config = {**model.config(), "image_size": tuple(new_grid[i] * model.patch_size for i in range(2))}
    config["token_dim"] = token_dim
    with torch.device("meta"):  # weights come from the state dict below, so skip the random init
        resized = MLPMixer(**config)  # config() has every constructor argument: dropout, drop_path, ...

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for i in range(model.depth):
        prefix = f"blocks.{i}.token_mixing."
        old = [state[prefix + name] for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")]
        if method.startswith("blockdiag"):
            new = _blockdiag_token_mlp(*old, grid, factors, strided=method == "blockdiag-strided")
        else:
            new = _interpolated_token_mlp(*old, grid, new_grid)
        for name, value in zip(("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"), new, strict=True):
            state[prefix + name] = value.contiguous()
    resized.load_state_dict(state, assign=True)
    resized.grad_checkpointing = model.grad_checkpointing
    resized.classes, resized.source = list(model.classes), model.source
    resized.preprocessing = dataclasses.replace(model.preprocessing, image_size=resized.image_size)
    return resized.train(model.training)


def resize_checkpoint(
    source: str | Path, image_size: int | tuple[int, int], output: str | Path, method: str = "auto"
) -> tuple[MLPMixer, MLPMixer]:
    """Resize the model of any ``--checkpoint`` source and write it: a ``save_pretrained`` folder, or a
    weights-only checkpoint when ``output`` ends in ``.pt``. Returns (the original model, the resized one)."""
    model = load_model(source)
    resized = resize_model(model, image_size, method)
    if Path(output).suffix == ".pt":
        save_checkpoint(resized, output)
    else:
        resized.save_pretrained(output)
    return model, resized
