"""A small, seeded, resumable trainer for the zoo (Fashion-MNIST, in-memory, CPU or GPU).

Every epoch's data order and augmentation come from a generator seeded by ``(seed, epoch)``, so a run that
is interrupted and resumed from its last per-epoch checkpoint continues exactly as if it had not stopped.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import ImageSet, normalize, preprocessor
from .distributed import all_reduce_sum


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters: AdamW, linear warm-up then cosine decay to 0, label smoothing, and
    random translations of up to ``shift`` pixels (zero padding) plus horizontal flips.

    Optional regularisers (all off by default, which is the zoo's recipe): ``crop_scale < 1`` adds a random
    resized crop (area fraction uniform in ``[crop_scale, 1]``, aspect ratio log-uniform in [3/4, 4/3],
    bilinear, resized back to the full image); ``cutmix`` and ``mixup`` are the Beta(α, α) concentrations of
    CutMix (Yun et al. 2019) and MixUp (Zhang et al. 2018); with both on, each minibatch uses one of them with
    probability 1/2 (as timm's ``Mixup``). The partner of every image is a seeded permutation of its minibatch,
    and the loss uses the mixed (soft) targets.

    ``distill`` names a teacher (e.g. ``"resnet"``, a zoo model) for DeiT's hard-label distillation (Touvron et
    al. 2021): the student must be a distilled ViT (:func:`vitcnn_utils.architectures.build_vit` with
    ``distilled=True``) and the loss is ``½·CE(class head, label) + ½·CE(distillation head, argmax teacher)``
    (label smoothing on the true label only); :func:`train` then needs the teacher module.

    ``precision="bf16"`` runs forward and backward under bfloat16 autocast with channels-last tensors (weights
    and optimiser state stay float32): 2.5x faster for the zoo's ResNet on a 2-core AVX512-BF16 CPU, but
    slower for its ViT (measured: 303 -> 752 images/s for the ResNet, 442 -> 343 for the ViT)."""
    epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.1
    shift: int = 2
    flip: bool = True
    precision: str = "fp32"
    crop_scale: float = 1.0
    cutmix: float = 0.0
    mixup: float = 0.0
    distill: str = ""

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"Recipe.precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"Recipe.crop_scale is the smallest crop area fraction, in (0, 1]; got {self.crop_scale}")
        if self.cutmix < 0 or self.mixup < 0:
            raise ValueError(f"Recipe.cutmix and Recipe.mixup are Beta concentrations >= 0 (0 = off); got "
                             f"{self.cutmix} and {self.mixup}")

    def to_dict(self) -> dict:
        """The fields as a dict; the optional regularisers only when they are on, so that the manifest entries
        of models trained before they existed still describe their recipe exactly."""
        return {k: v for k, v in asdict(self).items() if k not in _OPTIONAL or v != _OPTIONAL[k]}


_OPTIONAL = {"crop_scale": 1.0, "cutmix": 0.0, "mixup": 0.0, "distill": ""}


def augment(images: torch.Tensor, shift: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random translation (zero padded) and horizontal flip of a ``uint8`` batch ``(B, C, H, W)``."""
    b, _, h, w = images.shape
    if shift:
        padded = F.pad(images, (shift,) * 4)
        dy = torch.randint(0, 2 * shift + 1, (b, 1, 1), generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (b, 1, 1), generator=gen)
        rows = (dy + torch.arange(h).view(1, h, 1)).expand(b, h, w)
        cols = (dx + torch.arange(w).view(1, 1, w)).expand(b, h, w)
        images = padded[torch.arange(b).view(b, 1, 1), :, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(b, generator=gen) < 0.5
        images = torch.where(mask.view(b, 1, 1, 1), images.flip(-1), images)
    return images


def random_resized_crop(x: torch.Tensor, min_scale: float, gen: torch.Generator) -> torch.Tensor:
    """A random resized crop of every image of a float batch ``(B, C, H, W)``, resized back to ``H × W``:
    area fraction uniform in ``[min_scale, 1]``, aspect ratio log-uniform in [3/4, 4/3], the crop inside the
    image (bilinear, no padding)."""
    b = x.shape[0]
    area = min_scale + (1 - min_scale) * torch.rand(b, generator=gen)
    log_ratio = (torch.rand(b, generator=gen) * 2 - 1) * math.log(4 / 3)
    w = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)        # crop size as a fraction of the side
    h = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    tx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)              # centre, in [-1, 1] coordinates
    ty = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, tx, h, ty
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mix(x: torch.Tensor, y: torch.Tensor, num_classes: int, cutmix: float, mixup: float,
        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix or MixUp of a float batch ``x (B, C, H, W)`` with integer labels ``y (B,)``.

    Returns the mixed images and soft targets ``(B, num_classes)`` (rows sum to 1). λ ~ Beta(α, α) per
    minibatch; CutMix pastes a box of area ``(1 − λ)·H·W`` (centre uniform, clipped at the border, λ then
    recomputed from the clipped box) from the partner image. With both α > 0 one of the two is chosen per
    minibatch with probability 1/2."""
    import numpy as np

    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
    use_cutmix = cutmix > 0 and (mixup == 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    perm = torch.randperm(x.shape[0], generator=gen)
    if use_cutmix:
        h, w = x.shape[-2:]
        ch, cw = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    one_hot = F.one_hot(y, num_classes).to(x.dtype)
    return x, lam * one_hot + (1 - lam) * one_hot[perm]


@torch.inference_mode()
def accuracy(model: torch.nn.Module, batches, device: str | torch.device | None = None) -> tuple[float, int]:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on raw ``(images, labels)`` minibatches, with the
    model's own preprocessing (:func:`vitcnn_utils.data.preprocessor`), and the number of images; counts
    are all-reduced under ``torch.distributed``. (The trainer's evaluation: a forward pass of the logits, so it
    runs the model directly rather than through :func:`vitcnn_utils.runner.forward_passes`, which captures layers.)"""
    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    prep, was_training = preprocessor(model), model.training
    model.eval()
    correct = seen = 0
    for images, labels in batches:
        with torch.no_grad():
            pred = model(prep(images.to(device))).argmax(-1).cpu()
        correct += (pred == labels).sum().item()
        seen += labels.shape[0]
    model.train(was_training)
    correct, seen = all_reduce_sum([torch.tensor(float(correct)), torch.tensor(float(seen))])
    if seen == 0:
        raise ValueError("no images were given")
    return correct.item() / seen.item(), int(seen.item())


def model_accuracies(models: dict[str, torch.nn.Module], batches, device="cpu") -> dict[str, float]:
    """``{label: top-1 fraction}`` of every model on the same raw ``(images, labels)`` batches
    (:func:`vitcnn_utils.train.accuracy`)."""
    return {label: accuracy(model, batches, device)[0] for label, model in models.items()}


def evaluate(model: torch.nn.Module, data: ImageSet, batch_size: int = 500,
             device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on all of ``data`` (:func:`accuracy` on consecutive
    minibatches of ``batch_size``)."""
    minibatches = ((data.images[i:i + batch_size], data.labels[i:i + batch_size])
                   for i in range(0, len(data), batch_size))
    return accuracy(model, minibatches, device)[0]


def _lr_at(step: int, total: int, recipe: Recipe) -> float:
    warmup = max(1, round(recipe.warmup_fraction * total))
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class CheckpointError(ValueError):
    """A per-epoch checkpoint that cannot be resumed from (unreadable, or written for another run)."""


CHECKPOINT_KEYS = ("model", "optimizer", "history", "epoch", "seconds")


def _read_checkpoint(path: Path, device) -> dict:
    """The checkpoint ``path`` as :func:`train` wrote it; an unreadable (truncated, corrupt) or foreign file is a
    :class:`CheckpointError` naming it and saying that deleting it restarts the model."""
    fix = "delete it to train this model from the start (its finished epochs are lost)"
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:                    # pickle, zip and EOF errors alike: the file is unusable
        first = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(err).__name__}"
                              f"{': ' + first if first else ''}); {fix}") from None
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint of this trainer (it lacks "
                              f"{', '.join(CHECKPOINT_KEYS)}); {fix}")
    return state


def train(model: torch.nn.Module, train_set: ImageSet, test_set: ImageSet, recipe: Recipe, seed: int,
          checkpoint: str | Path | None = None, device: str | torch.device = "cpu", desc: str = "train",
          max_steps: int | None = None, teacher: torch.nn.Module | None = None) -> dict:
    """Train ``model`` in place and return its record.

    Args:
        teacher: the trained model ``recipe.distill`` names (hard-label distillation; kept in eval mode, not
            trained); required exactly when ``recipe.distill`` is set.
        checkpoint: file for the per-epoch checkpoint; an existing one is resumed from (one that cannot be read
            or was written for another recipe, seed or model is a :class:`CheckpointError` naming the file).
        max_steps: stop after this many optimisation steps (smoke tests); ``None`` runs the whole recipe.

    Returns:
        ``{"history": [{"epoch", "train_loss", "seconds"[, "test_accuracy"]}, ...], "test_accuracy",
        "train_seconds", "device"}``; the per-step losses of the last epoch are under ``"losses"``.
    """
    if bool(recipe.distill) != (teacher is not None):
        raise ValueError(f"recipe.distill is {recipe.distill!r} but a teacher was {'' if teacher is not None else 'not '}"
                         f"given: pass teacher=<the trained {recipe.distill or 'teacher'} model> exactly when the "
                         f"recipe distils")
    if teacher is not None and not hasattr(model, "set_distilled_training"):
        raise ValueError(f"distillation needs a student with a distillation token and head; {type(model).__name__} "
                         f"has none: build it with build_vit(..., distilled=True)")
    torch.manual_seed(seed)
    bf16 = recipe.precision == "bf16"
    if teacher is not None:
        if preprocessor(teacher) is not normalize:
            raise ValueError("the teacher must take the student's input (a zoo model on Fashion-MNIST, normalised by "
                             "vitcnn_utils.data.normalize); this one normalises otherwise")
        teacher.to(device).eval()
        model.set_distilled_training(True)
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model.to(device, memory_format=fmt).train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    steps_per_epoch = math.ceil(len(train_set) / recipe.batch_size)
    num_classes = model.num_classes                      # soft targets of CutMix / MixUp
    total = steps_per_epoch * recipe.epochs
    history, start_epoch, seconds = [], 0, 0.0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and ckpt.is_file():
        state = _read_checkpoint(ckpt, device)
        if state.get("recipe", recipe.to_dict()) != recipe.to_dict() or state.get("seed", seed) != seed:
            raise CheckpointError(f"checkpoint {ckpt} was written for recipe {state['recipe']} (seed "
                                  f"{state.get('seed')}), not {recipe.to_dict()} (seed {seed}); delete it to start "
                                  f"this recipe afresh")
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as err:
            raise CheckpointError(f"checkpoint {ckpt} does not fit this model ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0]}); delete it to train this model from the "
                                  f"start") from None
        history, start_epoch, seconds = state["history"], state["epoch"], state["seconds"]
    step, losses = start_epoch * steps_per_epoch, []
    eval_every = max(1, recipe.epochs // 10)           # about ten test evaluations per run, and the last epoch
    for epoch in range(start_epoch, recipe.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(train_set), generator=gen)
        losses, bar = [], tqdm(range(steps_per_epoch), desc=f"{desc} {epoch + 1}/{recipe.epochs}",
                               leave=False, mininterval=5)
        for i in bar:
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            x = normalize(augment(train_set.images[idx], recipe.shift, recipe.flip, gen))
            y = train_set.labels[idx]
            if recipe.crop_scale < 1:
                x = random_resized_crop(x, recipe.crop_scale, gen)
            if recipe.cutmix or recipe.mixup:
                x, y = mix(x, y, num_classes, recipe.cutmix, recipe.mixup, gen)
            x = x.to(device, memory_format=fmt)
            y = y.to(device)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, recipe)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                out = model(x)
                if teacher is None:
                    loss = F.cross_entropy(out, y, label_smoothing=recipe.label_smoothing)
                else:
                    with torch.no_grad():
                        taught = teacher(x).argmax(-1)        # x is already the zoo's normalised input
                    loss = 0.5 * F.cross_entropy(out[0], y, label_smoothing=recipe.label_smoothing) \
                        + 0.5 * F.cross_entropy(out[1], taught)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            if i % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
            if max_steps is not None and step >= max_steps:
                break
        seconds += time.perf_counter() - t0
        record = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses), "seconds": round(seconds, 1)}
        last = epoch + 1 == recipe.epochs or (max_steps is not None and step >= max_steps)
        if last or (epoch + 1) % eval_every == 0:          # the test pass costs more than a small-data epoch
            record["test_accuracy"] = evaluate(model, test_set, device=device)
        history.append(record)
        tqdm.write(f"{desc}: epoch {epoch + 1}/{recipe.epochs} loss {record['train_loss']:.4f}"
                   + (f" test accuracy {record['test_accuracy']:.4f}" if "test_accuracy" in record else "")
                   + f" ({seconds:.0f} s)")
        if max_steps is not None and step >= max_steps:
            break
        if ckpt:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                        "epoch": epoch + 1, "seconds": seconds, "recipe": recipe.to_dict(), "seed": seed}, tmp)
            tmp.replace(ckpt)
    if teacher is not None:
        model.set_distilled_training(False)
    model.to(memory_format=torch.contiguous_format).eval()
    return {"history": history, "test_accuracy": history[-1]["test_accuracy"], "train_seconds": round(seconds, 1),
            "device": _device_name(device), "losses": losses}


def _device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
