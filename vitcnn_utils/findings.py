"""The measured numbers behind the book's conclusion.

Each chapter records the numbers its text reports with :func:`record` (one JSON file per chapter in the
results folder, written atomically); the conclusion chapter reads them all with :func:`load` and judges each
of the paper's findings against them with the rules in :data:`FINDINGS`, so the verdict table always
follows from what this build computed.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

RESULTS_DIR = "book/chapters/results"


def _plain(value):
    """JSON-able copy of ``value`` (tensors and NumPy scalars/arrays become numbers and lists)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def record(chapter: str, values: dict, folder: str | os.PathLike = RESULTS_DIR) -> Path:
    """Write ``values`` (numbers, strings, lists, tensors) as ``folder/<chapter>.json``; returns the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{chapter}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_plain(values), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load(folder: str | os.PathLike = RESULTS_DIR) -> dict[str, dict]:
    """``{chapter: values}`` for every chapter recorded in ``folder``."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}


# --------------------------------------------------------------------------------------------------------
# The paper's findings and the rules that judge them against this build's numbers.

REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "partly", "not reproduced", "not measured"
LOCAL_HEAD, GLOBAL_HEAD = 0.75, 0.9   # a head is local below 0.75x, global above 0.9x the uniform-attention distance


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings: where it is measured, what the paper reports, and the rule that judges
    it: ``judge(results)`` gets ``{chapter: values}`` and returns ``(measured text, [criterion met?, ...])``;
    all criteria met = reproduced, some = partly, none = not reproduced."""
    number: int
    figure: str
    chapter: str
    paper: str
    criteria: str
    judge: Callable[[dict], tuple[str, list[bool]]]
    scale_note: str = ""   # why the result may differ at this project's scale (shown unless reproduced)


def _verdict(met: list[bool]) -> str:
    return REPRODUCED if all(met) else PARTLY if any(met) else NOT_REPRODUCED


def _heads(distances, uniform):
    d = [x for row in distances for x in (row if isinstance(row, list) else [row])]
    return sum(x < LOCAL_HEAD * uniform for x in d), sum(x > GLOBAL_HEAD * uniform for x in d), len(d)


def _f1(r):
    v = r["representation_structure"]
    return (f"lowest vs highest quarter: ViT {v['vit_low_high']:.2f}, ResNet {v['resnet_low_high']:.2f}",
            [v["vit_low_high"] > v["resnet_low_high"], v["vit_low_high"] - v["resnet_low_high"] >= 0.1])


def _f2(r):
    v = r["representation_structure"]
    return (f"{100 * v['vit_lowest_quarter_best_in_resnet_lower_half']:.0f}% of the ViT's lowest-quarter layers match "
            f"the ResNet's lower half best; best CKA of the ViT's last third with any ResNet layer "
            f"{v['max_cka_vit_last_third']:.2f}",
            [v["vit_lowest_quarter_best_in_resnet_lower_half"] >= 0.75, v["max_cka_vit_last_third"] < 0.5])


def _f3(r):
    v = r["local_global"]
    u = v["uniform_distance"]
    local0, global0, n0 = _heads(v["distances_all_data"][0], u)
    local_last, global_last, n_last = _heads(v["distances_all_data"][-1], u)
    return (f"first block: {local0} local and {global0} global of {n0} heads; last block: {local_last} local of "
            f"{n_last} (distances {v['summary_all_data']['first_min']:.1f}–{v['summary_all_data']['first_max']:.1f} px "
            f"in block 0, uniform attention {u:.1f} px)",
            [local0 > 0, global0 > 0, local_last == 0])


def _f4(r):
    v = r["local_global"]
    u = v["uniform_distance"]
    local_small = _heads(v["distances_less_data"][0], u)[0]
    local_full = _heads(v["distances_all_data"][0], u)[0]
    return (f"local first-block heads: {local_full} with all data, {local_small} with 3% of it",
            [local_small == 0, local_full > local_small])


def _f5(r):
    v = r["local_global"]
    rho = v["head_subset_rank_correlation"]
    return f"rank correlation of head distance with CKA to low ResNet layers {rho:+.2f}", [rho < 0, rho <= -0.5]


def _f6(r):
    v = r["local_global"]
    radius = v["erf_radius"]
    vit = [radius[f"ViT {layer}"] for layer in v["vit_erf_layers"]]
    res = [radius[f"ResNet {layer}"] for layer in v["resnet_erf_layers"]]
    return (f"half-mass radius (px), low/mid/high: ViT {', '.join(f'{x:.1f}' for x in vit)}; "
            f"ResNet {', '.join(f'{x:.1f}' for x in res)}",
            [vit[0] > res[0], vit[1] > res[1], all(a <= b + 1e-9 for a, b in zip(res, res[1:]))])


def _f7(r):
    v = r["skip_connections"]
    return (f"CLS vs patch-token ratio: first half {v['cls_ratio_first_half']:.2f} vs {v['spatial_ratio_first_half']:.2f}, "
            f"second half {v['cls_ratio_second_half']:.2f} vs {v['spatial_ratio_second_half']:.2f}; median ratio ViT "
            f"{v['vit_median_ratio']:.2f}, ResNet {v['resnet_median_ratio']:.2f}",
            [v["cls_ratio_first_half"] > v["spatial_ratio_first_half"],
             v["cls_ratio_second_half"] < v["spatial_ratio_second_half"],
             v["vit_median_ratio"] >= 2 * v["resnet_median_ratio"]])


def _f8(r):
    rows = r["skip_connections"]["no_skip"]
    if not rows:                                   # the chapter ran without no-skip models: Fig 8 not measured
        raise KeyError("no_skip")
    middle = min(rows, key=lambda row: abs(row["depth_fraction"] - 0.5))
    text = "; ".join(f"block {row['block']}: CKA across it {row['split_cka_intact']:.2f} → {row['split_cka_no_skip']:.2f}, "
                     f"accuracy drop {100 * row['accuracy_drop']:+.1f} points" for row in rows)
    return (text + f" (no-skip models trained with {middle['steps_fraction']:.0%} of the steps)"
            if middle.get("steps_fraction") is not None else text,
            [all(row["split_cka_no_skip"] < row["split_cka_intact"] for row in rows), middle["accuracy_drop"] >= 0.02])


def _f9(r):
    v = r["spatial"]
    own = {m: v[m]["interior_own_patch_is_best"] for m in ("vit_cls", "vit_gap", "resnet")}
    return (f"interior tokens most similar to their own patch: ViT-CLS {own['vit_cls']:.0%}, ViT-GAP {own['vit_gap']:.0%}, "
            f"ResNet {own['resnet']:.0%}",
            [own["vit_cls"] >= own["vit_gap"] + 0.2, own["vit_cls"] >= own["resnet"] + 0.2])


def _f10(r):
    v = r["spatial"]
    return (f"last block, single-token probes: ViT-CLS {v['vit_cls_tokens']:.1%}, ViT-GAP {v['vit_gap_tokens']:.1%}, "
            f"ResNet {v['resnet_tokens']:.1%}; CLS;CLS {v['vit_cls_cls']:.1%} vs GAP;GAP {v['vit_gap_gap']:.1%}",
            [v["vit_cls_tokens"] <= v["vit_gap_tokens"] - 0.1, v["vit_cls_tokens"] <= v["resnet_tokens"] - 0.1,
             abs(v["vit_cls_cls"] - v["vit_gap_gap"]) <= 0.03])


def _f11(r):
    v = r["data_scale"]
    small = v["smallest_fraction"]["ViT"]
    first, last = v["vit"]["cka_first_block"][small], v["vit"]["cka_last_block"][small]
    return (f"ViT trained on {small} vs 100%: CKA {first:.2f} at the first block, {last:.2f} at the last",
            [first >= 0.8, first - last >= 0.1])


def _f12(r):
    v = r["data_scale"]
    gain, vit_vs_resnet = v["probe_mid_gain_points"]["vit"], v["probe_mid_vit_minus_resnet_points"]
    return (f"mid-network probe: 100% minus {v['smallest_fraction']['ViT']} model {gain:+.1f} points (ViT); "
            f"ViT minus ResNet at 100% {vit_vs_resnet:+.1f} points",
            [gain >= 5, vit_vs_resnet > 0])


FINDINGS = [
    Finding(1, "Fig 1", "representation_structure",
            "ViT layers are uniformly similar; the ResNet has stages, low and high layers dissimilar",
            "ViT's lowest-vs-highest-quarter CKA above the ResNet's, by at least 0.1", _f1,
            "a 6-block ViT and a 6-unit ResNet have few layers between bottom and top; the paper's uniformity "
            "comes from ViTs of 12–32 blocks trained on 300M images"),
    Finding(2, "Fig 2", "representation_structure",
            "the ResNet's lower half matches the ViT's lowest quarter; the ViT's last third matches no ResNet layer",
            "≥ 75% of the ViT's lowest-quarter layers match best in the ResNet's lower half; max CKA of the "
            "ViT's last third with the ResNet < 0.5", _f2,
            "both small networks solve a 10-class task with 28-px images, so their top layers converge on the "
            "same class-separating representation"),
    Finding(3, "Fig 3", "local_global",
            "low blocks mix local and global heads; the highest blocks are all global",
            f"block 0 has a local head (< {LOCAL_HEAD}× the uniform distance) and a global one (> {GLOBAL_HEAD}×); "
            "the last block has no local head", _f3,
            "local heads need enough data (the paper's Fig 4): our largest training set is 60,000 images, less "
            "than ImageNet, and a 7×7 grid leaves little room between local and global"),
    Finding(4, "Fig 4", "local_global",
            "with less training data, early blocks learn no local heads",
            "no local first-block head in the 3% model, and fewer than in the 100% model", _f4,
            "if the 100% model has no local heads either, 60,000 images are already 'small data' for a ViT"),
    Finding(5, "Fig 5", "local_global",
            "the more local an early head, the more similar it is to the ResNet's lower layers",
            "rank correlation of head distance with its CKA < 0, and ≤ −0.5", _f5,
            "with 4 heads per block and no truly local head the distance range is narrow; the correlation "
            "rests on few points"),
    Finding(6, "Fig 6", "local_global",
            "ViT receptive fields are larger early and global by mid-network; the ResNet's grow gradually",
            "ViT radius above the ResNet's at low and mid depth; ResNet radius non-decreasing", _f6,
            "on a 28-px image the ResNet's receptive field covers most of the image after two stages"),
    Finding(7, "Fig 7", "skip_connections",
            "early on the CLS token travels the skip path while patch tokens change; reversed later; ViT ratios far "
            "above the ResNet's",
            "CLS ratio above the patch tokens' in the first half and below in the second; ViT median ratio ≥ 2× "
            "the ResNet's", _f7,
            "with 6 blocks and a 10-class task the CLS token has little to gather; the paper's pattern comes "
            "from 12–32-block ViTs"),
    Finding(8, "Fig 8", "skip_connections",
            "removing a block's skips splits the CKA heatmap there; middle blocks cost about 4% accuracy",
            "CKA across the block lower without its skips for every block tried; ≥ 2 points accuracy lost at the "
            "middle block", _f8,
            "the no-skip models had only a fraction of the intact model's optimisation steps (a CPU budget; the "
            "measurement gives it), so part of any accuracy gap is schedule, not architecture"),
    Finding(9, "Figs 9–10", "spatial",
            "ViT-CLS final tokens localise to their own patch; ResNet and GAP-ViT much less",
            "interior own-patch-best fraction of ViT-CLS ≥ 20 points above ViT-GAP's and the ResNet's", _f9,
            "28-px images in 4-px patches leave each token little context to lose"),
    Finding(10, "Fig 11", "spatial",
            "single spatial tokens of the CLS model probe poorly; GAP-model and ResNet tokens well; CLS;CLS ≈ GAP;GAP",
            "ViT-CLS token probe ≥ 10 points below ViT-GAP's and the ResNet's; CLS;CLS within 3 points of GAP;GAP",
            _f10,
            "10 classes are far easier to read from one token than the paper's 1,000 ImageNet classes"),
    Finding(11, "Fig 12", "data_scale",
            "low layers are already similar with 3–10% of the data; high layers need much more",
            "smallest-data ViT: first-block CKA with the 100% model ≥ 0.8, and ≥ 0.1 above the last block's", _f11,
            "our fractions are of 60,000 images (1,800 at 3%), not of 300 million"),
    Finding(12, "Fig 13", "data_scale",
            "more data gives much stronger intermediate layers; ViTs stronger than ResNets mid-network",
            "mid-network probe ≥ 5 points better at 100% than at the smallest fraction; ViT above ResNet at 100%",
            _f12,
            "the paper compares 300M vs 1.3M images; our largest/smallest ratio is 33×"),
]


def table(results: dict) -> list[dict]:
    """One row per finding: number, figure, the paper's result, what this build measured, the criteria and
    the verdict (``not measured`` when a chapter's numbers are missing)."""
    rows = []
    for f in FINDINGS:
        row = {"finding": f.number, "figure": f.figure, "paper": f.paper, "criteria": f.criteria}
        try:
            measured, met = f.judge(results)
            verdict = _verdict(met)
            row |= {"measured": measured, "verdict": verdict, "met": f"{sum(met)}/{len(met)}",
                    "note": f.scale_note if verdict != REPRODUCED else ""}
        except KeyError as missing:
            row |= {"measured": f"(no {missing} in this build's results)", "verdict": NOT_MEASURED, "met": "–",
                    "note": "the chapter that measures it did not run in this build"}
        except TypeError:                      # a recorded None: the quantity is undefined for these models
            row |= {"measured": "(undefined for the models of this build)", "verdict": NOT_MEASURED, "met": "–",
                    "note": "the recorded value is undefined (e.g. a CLS statistic for a model without CLS token)"}
        rows.append(row)
    return rows
