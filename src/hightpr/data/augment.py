"""Batched, device-side image augmentation and normalisation (no per-sample PIL pipeline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def random_crop_flip(x: torch.Tensor, padding: int = 4, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crop after zero padding, and random horizontal flip, on [B,C,H,W].

    The draws come from `generator` (default: the global stream of x's device), in the order
    `crop_flip_draws` makes them.
    """
    return apply_crop_flip(x, crop_flip_draws(x.shape[0], padding, flip, x.device, generator), padding)


def crop_flip_draws(b: int, padding: int = 4, flip: bool = True, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The random draws of `random_crop_flip` for a batch of b: row/column offsets and flip mask.

    Split from their application so that several ensemble members can draw from their own
    streams and have one batched crop applied to all of them (`hightpr.stacked`).
    """
    draws: dict[str, torch.Tensor] = {}
    if padding > 0:
        draws["oy"] = torch.randint(0, 2 * padding + 1, (b,), device=device, generator=generator)
        draws["ox"] = torch.randint(0, 2 * padding + 1, (b,), device=device, generator=generator)
    if flip:
        draws["flip"] = torch.rand(b, device=device, generator=generator) < 0.5
    return draws


def apply_crop_flip(x: torch.Tensor, draws: dict[str, torch.Tensor], padding: int = 4) -> torch.Tensor:
    """Crop (zero padding `padding`) and flip [B,C,H,W] with the draws of `crop_flip_draws`."""
    b, _, h, w = x.shape
    if "oy" in draws:
        padded = F.pad(x, (padding,) * 4)
        rows = (draws["oy"][:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B,1,H,1]
        cols = (draws["ox"][:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [B,1,1,W]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if "flip" in draws:
        x = torch.where(draws["flip"][:, None, None, None], x.flip(-1), x)
    return x


def to_float(x: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """uint8 [B,C,H,W] -> normalised float32."""
    m = torch.as_tensor(mean, device=x.device, dtype=torch.float32)[None, :, None, None]
    s = torch.as_tensor(std, device=x.device, dtype=torch.float32)[None, :, None, None]
    return (x.float() / 255.0 - m) / s


# -- any number of spatial dims (3D volumes) and other normalisations ------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_flips(x: torch.Tensor, dims: tuple[int, ...], generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Flip each sample of [B, C, ...] independently along each of `dims`, each with prob. 1/2.

    3D volumes: `dims=(-3, -2, -1)`; dermoscopy (no preferred orientation): `(-2, -1)`. The draws
    come from `generator` (default: the global stream of x's device).
    """
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    for d in dims:
        mask = (torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5).view(shape)
        x = torch.where(mask, x.flip(d), x)
    return x


def normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], scale: float = 255.0):
    """[B, C, ...] (uint8 or float) -> float32 (x / scale - mean[c]) / std[c], for any spatial rank."""
    shape = (1, len(mean)) + (1,) * (x.ndim - 2)
    m = torch.as_tensor(mean, device=x.device, dtype=torch.float32).view(shape)
    s = torch.as_tensor(std, device=x.device, dtype=torch.float32).view(shape)
    return (x.float() / scale - m) / s
