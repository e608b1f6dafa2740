"""Train the zoo: ``python -m vitcnn_utils.zoo [--only NAME ...] [--device cuda] [--data-dir DIR]``.

Each model is trained with its :class:`~vitcnn_utils.zoo.Spec`, evaluated on the 10,000 test images, saved
as ``<name>.safetensors`` beside the manifest, and recorded in ``manifest.json`` as soon as it finishes.
Per-epoch checkpoints live in ``--checkpoints`` (default ``.cache/zoo``, outside git); rerunning the
command resumes an interrupted model and skips finished ones (``--retrain`` forces them).
"""
from __future__ import annotations

import argparse
import json
import platform

import torch
from safetensors.torch import save_file

from . import MANIFEST, SPECS, ZOO_DIR, is_current, manifest, sha256
from ..data import fraction_subset, load_fashion_mnist
from ..architectures import build_architecture
from ..train import CheckpointError, train


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(SPECS), help="train only these models")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--checkpoints", default=".cache/zoo", help="folder for per-epoch checkpoints")
    parser.add_argument("--retrain", action="store_true", help="retrain models already in the manifest")
    args = parser.parse_args(argv)

    train_full, test = load_fashion_mnist("train", args.data_dir), load_fashion_mnist("test", args.data_dir)
    names = args.only or list(SPECS)
    for name in names:
        if is_current(name) and not args.retrain:
            print(f"{name}: already trained (test accuracy {manifest()[name]['test_accuracy']:.4f}); skipping")
            continue
        if name in manifest() and not args.retrain:
            print(f"{name}: trained under an older spec; retraining")
        spec = SPECS[name]
        torch.manual_seed(spec.seed)
        model = build_architecture(spec.arch)
        subset = fraction_subset(train_full, spec.fraction, seed=spec.seed)
        try:
            record = train(model, subset, test, spec.recipe, spec.seed, device=args.device, desc=name,
                           checkpoint=f"{args.checkpoints}/{name}.pt")
        except CheckpointError as err:          # one line: which file, and that deleting it restarts this model
            raise SystemExit(f"{name}: {err}") from None
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        path = ZOO_DIR / f"{name}.safetensors"
        save_file(state, path)
        entry = {"file": path.name, "sha256": sha256(path), "arch": spec.arch, "recipe": spec.recipe.to_dict(),
                 "fraction": spec.fraction, "train_images": len(subset), "seed": spec.seed,
                 "epochs": spec.recipe.epochs, "test_accuracy": record["test_accuracy"],
                 "history": record["history"], "train_seconds": record["train_seconds"],
                 "device": record["device"], "torch": torch.__version__, "python": platform.python_version(),
                 "parameters": sum(p.numel() for p in model.parameters())}
        entries = manifest()  # re-read: another process may have added models meanwhile
        entries[name] = entry
        tmp = MANIFEST.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(sorted(entries.items())), indent=1) + "\n")
        tmp.replace(MANIFEST)
        print(f"{name}: test accuracy {entry['test_accuracy']:.4f}, {entry['train_seconds']:.0f} s, "
              f"saved {path.name}")


if __name__ == "__main__":
    main()
