"""How much forward-pass work the chapters repeat: what sharing passes between chapters could save at most.

Runs each measuring chapter's ``run`` with its default (zoo) models, one draw, its first training seed and no
cache, one after the other in one process, and records every model forward pass the library makes
(:class:`vitcnn_utils.hooks.Capture`): which model (its structure and weights, as
:func:`vitcnn_utils.cache.model_fingerprint` hashes them for the results cache), which images (a hash of each
preprocessed image) and how long the pass took, its capture hooks included. An image's pass through a model
*repeats* when the same model already saw the same image, earlier in the same chapter or in another one.

    python benchmarks/shared_passes.py [--chapters representation_structure spatial ...]

Prints, per chapter, the image-passes it makes, how many repeat its own or an earlier chapter's, and the time
of the repeating passes (each pass's time split evenly over its images). That time is an upper bound on what
one shared pass per (model, image) could save: a shared pass still has to capture the union of the layers.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import time
from collections import defaultdict

from vitcnn_utils import hooks
from vitcnn_utils.cache import _tensor_bytes, model_fingerprint
from vitcnn_utils.tools.book import MEASURING


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", nargs="+", choices=MEASURING, default=MEASURING)
    args = parser.parse_args()

    records: list[tuple[str, str, list[bytes], float]] = []      # (chapter, model hash, image hashes, seconds)
    chapter_now = [""]
    original_call = hooks.Capture.__call__

    def recording_call(self, *call_args, **kwargs):
        images = call_args[0]
        start = time.perf_counter()
        out = original_call(self, *call_args, **kwargs)
        seconds = time.perf_counter() - start
        per_image = [hashlib.sha256(_tensor_bytes(image)).digest()[:12] for image in images]
        # the model's hash at every pass, not memoised by id(): a freed model's id can come back for the next
        # chapter's model, and weights can change in place
        records.append((chapter_now[0], model_fingerprint(self.model, "")["params_sha256"], per_image, seconds))
        return out

    hooks.Capture.__call__ = recording_call
    walls = {}
    try:
        for chapter in args.chapters:
            module = importlib.import_module(f"vitcnn_utils.chapters.{chapter}")
            chapter_now[0] = chapter
            start = time.perf_counter()
            module.run(**{**module.Params().run_arguments(), "n_draws": 1, "use_cache": False})
            walls[chapter] = time.perf_counter() - start
            print(f"{chapter}: {walls[chapter]:.1f} s", flush=True)
    finally:
        hooks.Capture.__call__ = original_call

    seen: dict[tuple[str, bytes], str] = {}                      # (model, image) -> first chapter
    rows = defaultdict(lambda: [0, 0, 0, 0.0, 0.0, 0.0])         # passes, own repeats, other's, s, s own, s other
    for chapter, model, images, seconds in records:
        row = rows[chapter]
        row[3] += seconds
        share = seconds / max(len(images), 1)
        for image in images:
            key = (model, image)
            row[0] += 1
            if key not in seen:
                seen[key] = chapter
            elif seen[key] == chapter:
                row[1] += 1
                row[4] += share
            else:
                row[2] += 1
                row[5] += share
    print("\none draw, first training seed (image-passes: one image through one model)")
    print(f"{'chapter':26} {'wall':>8} {'in passes':>10} {'passes':>8} {'repeat own':>11} {'repeat earlier':>15}")
    for chapter in args.chapters:
        n, own, other, s, s_own, s_other = rows[chapter]
        print(f"{chapter:26} {walls[chapter]:7.1f}s {s:9.1f}s {n:8d} {own:6d} {s_own:5.1f}s {other:8d} {s_other:6.1f}s")


if __name__ == "__main__":
    main()
