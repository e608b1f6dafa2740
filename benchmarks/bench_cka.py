"""CKA benchmark: within-A, within-B and A×B heatmaps of two 12-block toy ViTs.

Reports in one run: the CPU (``lscpu`` model name; AVX2, AVX-512, AVX-512 BF16 and AMX flags), the floor
(the bare forward of both models with no hooks, plus the float32 Gram products ``x @ x.T`` of every captured
layer's shape and every minibatch size timed alone, on random tensors, no hooks) and ``measure.model_heatmaps``
(all three heatmaps) as a ratio to that floor; the forward time with the capture hooks keeping every feature,
the CKA overhead of vitcnn_utils.cka.MinibatchCKA on those features (float64 and float32 Gram products), the speed-up over a straightforward per-pair loop (two Gram matrices recomputed for every layer
pair; timed on a random sample of pairs and extrapolated to all of them), the peer library pytorch-cka on the same
models, layers and images (end to end: its three compute_cka calls against our forward + MinibatchCKA, and
against measure.model_heatmaps, which computes each layer's Gram inside the forward hook), and the
maximum error of every heatmap entry against a float64 NumPy reference (Song et al.'s formula, per pair, summed
over minibatches).

pytorch-cka is never a dependency of this project: the script installs it with pip (no dependencies; it needs
only torch, numpy, tqdm and matplotlib, which are here) into a throw-away folder that is deleted afterwards
(``--no-peer`` skips it, e.g. offline).

The floor lines and ``model_heatmaps`` are each the fastest of ``--repeat`` runs (after one warm-up minibatch).
``--profile`` prints instead where ``model_heatmaps`` spends its time (``torch.profiler``: the top operations,
and the time inside the Gram hooks, the per-minibatch update, its U-centring and its HSIC product).
``--quick`` is a smoke run of every line at a tiny size (e.g. ``--n-images 64 --quick``). ``--threads 1`` gives
steadier numbers while other work shares the CPU (label them so: the floor ratio depends on the thread count).

    python benchmarks/bench_cka.py [--examples/--n-images 2048] [--batch 256] [--loop-pairs 60] [--repeat 3]
                                   [--threads N] [--no-peer] [--quick] [--profile [--top 15]]
"""
from __future__ import annotations

import argparse
import importlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from vitcnn_utils.cka import MinibatchCKA, split_heatmap
from vitcnn_utils.measure import model_heatmaps
from vitcnn_utils.data import normalize, preprocessor
from vitcnn_utils.hooks import Capture, default_layers
from vitcnn_utils.architectures import build_vit


def toy_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_vit(embed_dim=64, depth=12, num_heads=4, mlp_ratio=2.0).eval()


def per_pair_loop_hsic(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """The straightforward way: Grams and unbiased HSIC recomputed for this one pair (float64)."""
    def u_gram(z):
        z = z.reshape(len(z), -1).double()
        k = z @ z.T
        n = len(k)
        k.fill_diagonal_(0)
        means = k.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        k = k - means[:, None] - means[None, :]
        return k.fill_diagonal_(0)
    k, l = u_gram(x), u_gram(y)
    n = len(k)
    return ((k * l).sum() / (n * (n - 3))).item(), ((k * k).sum() / (n * (n - 3))).item(), \
        ((l * l).sum() / (n * (n - 3))).item()


def reference_heatmap(batches: list[list[np.ndarray]]) -> np.ndarray:
    """float64 NumPy: Song et al.'s unbiased HSIC (explicit formula) for all layer pairs, summed over batches."""
    n_layers = len(batches[0])
    xy = np.zeros((n_layers, n_layers))
    for feats in batches:
        n = len(feats[0])
        grams = []
        for f in feats:
            f = f.reshape(n, -1).astype(np.float64)
            f = f - f[:1]                     # exact offset invariance; keeps the explicit formula accurate
            k = f @ f.T
            np.fill_diagonal(k, 0.0)
            grams.append(k)
        flat = np.stack([k.ravel() for k in grams])            # tr(K L) = <K, L> for symmetric K, L
        sums = np.array([k.sum() for k in grams])
        rows = np.stack([k.sum(1) for k in grams])              # K 1
        xy += (flat @ flat.T + np.outer(sums, sums) / ((n - 1) * (n - 2))
               - 2.0 / (n - 2) * rows @ rows.T) / (n * (n - 3))
    d = np.sqrt(np.diag(xy))
    return xy / np.outer(d, d)


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_line() -> str:
    """``lscpu``'s model name and which of CPU_FLAGS the CPU has (from ``lscpu``'s flags, else /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                model = value.strip()
            elif key.strip() == "Flags":
                flags = set(value.split())
    except (OSError, subprocess.CalledProcessError):
        pass
    if not flags:
        try:
            with open("/proc/cpuinfo") as f:
                flags = set(next((l.partition(":")[2] for l in f if l.startswith("flags")), "").split())
        except OSError:
            pass
    have = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS)
    return f"CPU: {model}, {torch.get_num_threads()} torch threads; {have}"


def fastest(run, repeat: int) -> float:
    """The fastest of ``repeat`` calls of ``run()`` (which returns its own seconds)."""
    return min(run() for _ in range(max(1, repeat)))


def bare_forward_seconds(models, raw_batches, device, sync) -> float:
    """Every model on every raw minibatch, preprocessing included, no hooks, no_grad (as model_heatmaps runs)."""
    preps = [preprocessor(m) for m in models]
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        for x in raw_batches:
            for model, prep in zip(models, preps):
                model(prep(x.to(device)))
    sync()
    return time.perf_counter() - t0


def captured_widths(models, layers, image, device) -> list[int]:
    """The flattened width ``p`` of every captured layer (``(n, p)`` after ``reshape(n, -1)``), all models,
    from one forward pass of one image."""
    widths = []
    for model, names in zip(models, layers):
        with Capture(model, names) as cap, torch.no_grad():
            widths += [f[0].numel() for f in cap(preprocessor(model)(image.to(device))).values()]
    return widths


def gram_products_seconds(tensors, batch_sizes, sync) -> float:
    """The float32 Gram product ``x @ x.T`` of every layer (one random ``(n_max, p)`` tensor per layer, its first
    ``n`` rows) for every minibatch size, timed alone."""
    sync()
    t0 = time.perf_counter()
    for n in batch_sizes:
        for x in tensors:
            x = x[:n]
            x @ x.T
    sync()
    return time.perf_counter() - t0


def profile_heatmaps(models, layers, raw_batches, device, top: int) -> None:
    """``torch.profiler`` over one ``model_heatmaps`` call and over the floor (bare forward, Gram products):
    the time inside the library's phases (labelled by wrapping them, for this call only), the top operations
    by self CPU time, and the operations whose self time exceeds the floor's (what ``model_heatmaps`` adds)."""
    import vitcnn_utils.cka as cka_module
    from torch.profiler import ProfilerActivity, profile, record_function

    def labelled(label, fn):
        def wrapper(*a, **k):
            with record_function(label):
                return fn(*a, **k)
        return wrapper

    saved = {name: getattr(cka_module, name) for name in ("_centred_gram", "u_centre_")}
    saved_cls = {name: getattr(cka_module.MinibatchCKA, name) for name in ("gram", "update", "_grams", "compute")}
    run = lambda: model_heatmaps({"a": models[0], "b": models[1]}, [(x, None) for x in raw_batches],
                                 layers={"a": layers[0], "b": layers[1]}, device=device,
                                 gram_dtype=torch.float32, progress=False)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sizes = [len(x) for x in raw_batches]
    gen = torch.Generator().manual_seed(1)
    gram_inputs = [torch.randn(max(sizes), p, generator=gen).to(device)
                   for p in captured_widths(models, layers, raw_batches[0][:1], device)]
    floor = lambda: (bare_forward_seconds(models, raw_batches, device, sync),
                     gram_products_seconds(gram_inputs, sizes, sync))
    run(), floor()                                               # warm-up, unprofiled
    phases = {"gram": "hook: MinibatchCKA.gram (all of it)",
              "_centred_gram": "hook: _centred_gram (centre, cast, Gram, .double())",
              "update": "MinibatchCKA.update (all of it)",
              "_grams": "update: _grams (stack, isfinite flags, u_centre_)",
              "u_centre_": "update: u_centre_ (all layers at once)",
              "compute": "MinibatchCKA.compute"}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    try:
        for name, fn in saved.items():
            setattr(cka_module, name, labelled("phase: " + phases[name], fn))
        for name, fn in saved_cls.items():
            setattr(cka_module.MinibatchCKA, name, labelled("phase: " + phases[name], fn))
        with profile(activities=activities) as prof:
            with record_function("phase: model_heatmaps (total)"):
                run()
    finally:
        for name, fn in saved.items():
            setattr(cka_module, name, fn)
        for name, fn in saved_cls.items():
            setattr(cka_module.MinibatchCKA, name, fn)
    with profile(activities=activities) as floor_prof:
        with record_function("phase: floor (total)"):
            floor()
    events, floor_events = prof.key_averages(), floor_prof.key_averages()
    total = next(e for e in events if e.key == "phase: model_heatmaps (total)").cpu_time_total
    floor_total = next(e for e in floor_events if e.key == "phase: floor (total)").cpu_time_total
    print(f"profile of model_heatmaps, {sum(sizes)} images in {len(sizes)} minibatch(es), "
          f"{torch.get_num_threads()} threads: {total / 1e6:.3f} s under the profiler; the floor (bare forward + "
          f"Gram products) {floor_total / 1e6:.3f} s under it: {total / floor_total:.2f}×")
    print("  phases (inclusive CPU time, share of model_heatmaps):")
    for label in phases.values():
        event = next((e for e in events if e.key == "phase: " + label), None)
        if event is not None:
            print(f"    {label:<55} {event.cpu_time_total / 1e6:7.3f} s  {event.cpu_time_total / total:6.1%}"
                  f"  ({event.count} calls)")
    ops = sorted((e for e in events if not e.key.startswith("phase:")), key=lambda e: -e.self_cpu_time_total)
    print(f"  top {top} operations of model_heatmaps by self CPU time (share of model_heatmaps):")
    for e in ops[:top]:
        print(f"    {e.key:<50} {e.self_cpu_time_total / 1e6:7.3f} s  {e.self_cpu_time_total / total:6.1%}"
              f"  ({e.count} calls)")
    in_floor = {e.key: e for e in floor_events}
    extra = sorted(((e.self_cpu_time_total - (in_floor[e.key].self_cpu_time_total if e.key in in_floor else 0),
                     e.count - (in_floor[e.key].count if e.key in in_floor else 0), e.key) for e in ops),
                   reverse=True)
    gap = total - floor_total
    if gap <= 0:
        print(f"  no time beyond the floor under the profiler ({gap / 1e6:.3f} s): too small to see, or other work "
              "on the CPU disturbed the runs; try --threads 1 or a larger --n-images")
        return
    print(f"  beyond the floor ({gap / 1e6:.3f} s): operations' self CPU time minus the floor's (share of the gap):")
    for seconds, count, key in extra[:top]:
        if seconds <= 0:
            break
        print(f"    {key:<50} {seconds / 1e6:7.3f} s  {seconds / gap:6.1%}  ({count:+d} calls)")


PEER = "pytorch-cka==1.1.3"


def run_peer(model_a, model_b, layers_a, layers_b, batches, device, sync):
    """pytorch-cka's within-A, within-B and A×B heatmaps (its ``compute_cka``: one forward per model and
    call, Grams and HSIC in float32, result clamped to [0, 1]) and their wall time; installed into a
    throw-away folder for this call only."""
    with tempfile.TemporaryDirectory(prefix="peer-cka-") as folder:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", folder, PEER],
                       check=True)
        sys.path.insert(0, folder)
        try:
            peer = importlib.import_module("cka")
            sync()
            t0 = time.perf_counter()
            aa = peer.compute_cka(model_a, model_a, [list(batches)], layers=layers_a, device=device, progress=False)[0]
            bb = peer.compute_cka(model_b, model_b, [list(batches)], layers=layers_b, device=device, progress=False)[0]
            ab = peer.compute_cka(model_a, model_b, [list(batches)], layers=layers_a, model2_layers=layers_b,
                                  device=device, progress=False)[0]
            sync()
            seconds = time.perf_counter() - t0
        finally:
            sys.path.remove(folder)
            sys.modules.pop("cka", None)
            for name in [m for m in sys.modules if m.startswith("cka.")]:
                sys.modules.pop(name)
    return [m.double().cpu().numpy() for m in (aa, bb, ab)], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", "--n-images", dest="examples", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--loop-pairs", type=int, default=60, help="pairs timed for the per-pair loop")
    parser.add_argument("--repeat", type=int, default=3, help="floor lines and model_heatmaps: fastest of this many")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-peer", action="store_true", help="skip pytorch-cka (it is installed from PyPI)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: every line once, 4 loop pairs (use with a small --n-images, e.g. 64)")
    parser.add_argument("--profile", action="store_true",
                        help="only profile model_heatmaps (torch.profiler) at these sizes and print the top operations")
    parser.add_argument("--top", type=int, default=15, help="--profile: operations listed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 gives steadier numbers while other work runs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeat, args.loop_pairs = 1, min(args.loop_pairs, 4)
    if args.examples < 4 or args.batch < 4:
        parser.error("--examples and --batch must be at least 4 (unbiased HSIC needs 4 examples per minibatch)")
    device = torch.device(args.device)
    model_a, model_b = toy_model(0).to(device), toy_model(1).to(device)
    layers_a, layers_b = default_layers(model_a), default_layers(model_b)
    raw = torch.randint(0, 256, (args.examples, 1, 28, 28), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(0))
    raw_batches = raw.split(args.batch)
    if len(raw_batches) > 1 and len(raw_batches[-1]) < 4:            # a ragged last batch too small for HSIC
        raw_batches = raw_batches[:-1]
    images = normalize(raw[:sum(len(x) for x in raw_batches)])        # the model input every method sees
    batches = images.split(args.batch)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    print(cpu_line(), flush=True)
    if args.profile:
        profile_heatmaps((model_a, model_b), (layers_a, layers_b), raw_batches, device, args.top)
        return

    # 0. the floor: bare forward (no hooks) + the float32 Gram products of every captured layer, timed alone
    def heatmaps(batch_list):
        return model_heatmaps({"a": model_a, "b": model_b}, [(x, None) for x in batch_list],
                              layers={"a": layers_a, "b": layers_b}, device=device, gram_dtype=torch.float32,
                              progress=False)
    widths = captured_widths((model_a, model_b), (layers_a, layers_b), raw[:1], device)
    sizes = [len(x) for x in raw_batches]
    gen = torch.Generator().manual_seed(1)
    gram_inputs = [torch.randn(max(sizes), p, generator=gen).to(device) for p in widths]
    bare_forward_seconds((model_a, model_b), raw_batches[:1], device, sync)          # warm-up, one minibatch
    gram_products_seconds(gram_inputs, sizes[:1], sync)
    heatmaps(raw_batches[:1])

    def timed_heatmaps():
        nonlocal fused
        sync()
        t0 = time.perf_counter()
        fused = heatmaps(raw_batches)
        sync()
        return time.perf_counter() - t0
    fused = None
    t_bare = fastest(lambda: bare_forward_seconds((model_a, model_b), raw_batches, device, sync), args.repeat)
    t_grams = fastest(lambda: gram_products_seconds(gram_inputs, sizes, sync), args.repeat)
    t_fused = fastest(timed_heatmaps, args.repeat)
    del gram_inputs
    t_floor = t_bare + t_grams

    # 1. forward keeping every captured feature (hooks on, each feature copied), for the methods below
    feats = []
    with Capture(model_a, layers_a) as cap_a, Capture(model_b, layers_b) as cap_b, torch.inference_mode():
        sync()
        t0 = time.perf_counter()
        for x in batches:
            x = x.to(device)
            feats.append((list(cap_a(x).values()), list(cap_b(x).values())))
        sync()
        t_forward = time.perf_counter() - t0

        # 2. MinibatchCKA: within-A, within-B and A×B from one update per minibatch
        t0 = time.perf_counter()
        cka = MinibatchCKA()
        for fa, fb in feats:
            cka.update(fa + fb)
        heatmap = cka.compute()
        sync()
        t_cka = time.perf_counter() - t0
        t0 = time.perf_counter()
        cka32 = MinibatchCKA(gram_dtype=torch.float32)
        for fa, fb in feats:
            cka32.update(fa + fb)
        heatmap32 = cka32.compute()
        sync()
        t_cka32 = time.perf_counter() - t0
    aa, bb, ab = split_heatmap(heatmap, len(layers_a))
    n_a, n_b = len(layers_a), len(layers_b)
    n_pairs = n_a * n_a + n_b * n_b + n_a * n_b                   # the three heatmaps, as a loop computes them

    # 3. the straightforward per-pair loop, timed on a sample of pairs
    all_feats = [fa + fb for fa, fb in feats]
    rng = np.random.default_rng(0)
    sample = [(int(i), int(j)) for i, j in rng.integers(0, n_a + n_b, size=(args.loop_pairs, 2))]
    t0 = time.perf_counter()
    loop_values = []
    for i, j in sample:
        sums = np.zeros(3)
        for batch in all_feats:
            sums += per_pair_loop_hsic(batch[i], batch[j])
        loop_values.append(sums[0] / np.sqrt(sums[1] * sums[2]))
    sync()
    t_loop = (time.perf_counter() - t0) / len(sample) * n_pairs

    # 4. float64 reference for every entry
    t0 = time.perf_counter()
    reference = reference_heatmap([[f.cpu().numpy() for f in batch] for batch in all_feats])
    t_ref = time.perf_counter() - t0
    err = np.abs(heatmap.numpy() - reference).max()
    err32 = np.abs(heatmap32.numpy() - reference).max()
    err_fused = np.abs(fused.matrix.numpy() - reference).max()
    del feats, all_feats
    peer = None
    if not args.no_peer:
        try:
            peer_maps, t_peer = run_peer(model_a, model_b, layers_a, layers_b, batches, device, sync)
        except (subprocess.CalledProcessError, ImportError, OSError) as error:
            print(f"  ({PEER} could not be installed or imported, skipped: {type(error).__name__}: {error})")
        else:
            peer_err = max(np.abs(m - r.numpy()).max()
                           for m, r in zip(peer_maps, split_heatmap(torch.from_numpy(reference), n_a)))
            peer = (t_peer, peer_err)
    loop_err = max(abs(v - reference[i, j]) for v, (i, j) in zip(loop_values, sample))

    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu}, {torch.get_num_threads()} threads"
    best = f"fastest of {args.repeat}" if args.repeat > 1 else "one run"
    print(f"CKA benchmark on {where} (torch {torch.__version__})")
    print(f"  two 12-block toy ViTs (width 64, 50 tokens), {n_a} + {n_b} layers, {sum(sizes)} examples "
          f"in {len(sizes)} batch(es) of {sizes[0]}; heatmaps {tuple(aa.shape)}, {tuple(bb.shape)}, {tuple(ab.shape)}")
    print(f"  floor: bare forward, both models, no hooks:       {t_bare:8.2f} s  ({best})")
    print(f"  floor: float32 Gram products x @ x.T alone:       {t_grams:8.2f} s  ({n_a + n_b} layers × "
          f"{len(sizes)} minibatches, {best})")
    print(f"  floor: bare forward + Gram products:              {t_floor:8.2f} s")
    print(f"  model_heatmaps, all three heatmaps (float32 Grams): {t_fused:6.2f} s  = {t_fused / t_floor:.2f}× the "
          f"floor (goal ≤ 1.25×), max |error| {err_fused:.1e} ({best})")
    print(f"  forward keeping every captured feature (hooks on): {t_forward:7.2f} s  (not a floor: copies each feature)")
    print(f"  MinibatchCKA on kept features, float64 Grams: {t_cka:8.2f} s  (+ that forward: {t_forward + t_cka:.2f} s)")
    print(f"  MinibatchCKA on kept features, float32 Grams: {t_cka32:8.2f} s  (+ that forward: {t_forward + t_cka32:.2f} s)")
    print(f"  per-pair loop, {n_pairs} pairs (timed on {len(sample)}): {t_loop:8.1f} s  "
          f"-> MinibatchCKA is {t_loop / t_cka:.0f}× faster")
    print(f"  max |error| vs float64 NumPy reference over all {heatmap.numel()} entries: {err:.1e} "
          f"(per-pair loop: {loop_err:.1e}; reference took {t_ref:.1f} s)")
    print(f"  max |error| with float32 Gram products: {err32:.1e}; model_heatmaps: {err_fused:.1e}")
    if peer:
        t_peer, peer_err = peer
        ours, ours32 = t_forward + t_cka, t_forward + t_cka32
        print(f"  end to end, within-A + within-B + A×B:  {PEER} {t_peer:.2f} s, max |error| {peer_err:.1e}; "
              f"vitcnn_utils {ours:.2f} s (captured features, float64 Grams), {ours32:.2f} s (float32 Gram products), "
              f"{t_fused:.2f} s (model_heatmaps) -> {t_peer / ours:.1f}× / {t_peer / ours32:.1f}× / "
              f"{t_peer / t_fused:.1f}× faster")
    elif args.no_peer:
        print(f"  {PEER}: skipped (--no-peer)")


if __name__ == "__main__":
    main()
