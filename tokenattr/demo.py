"""The demo: a tiny ViT trained on synthetic shapes and a tiny BERT trained on synthetic reviews, explained by
every method.

    python -m tokenattr.demo --out outputs/demo          # bundled ViT weights, BERT trained here (1.5 minutes)
    python -m tokenattr.demo --retrain --out outputs/demo   # trains the ViT again first (about two minutes more)

The shapes data (:mod:`tokenattr.data.synthetic`) knows, pixel by pixel, where the class evidence is: the
object's mask. The demo reports how much of each method's map falls inside it, and draws the maps.
The trained weights ship in the package (``assets/demo_vit.safetensors``, timm names) with their training
settings and held-out accuracy in the file's metadata. The text side (:mod:`tokenattr.demo_text`) knows which
words decide each review's label and scores every token method on them with the ERASER rationale test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tokenattr
from tokenattr.data.synthetic import SHAPE_CLASSES, ShapesDataset, make_shapes
from tokenattr.data.transforms import normalize
from tokenattr.demo_text import print_text_table, run_text_demo, token_methods
from tokenattr.io import atomic_path
from tokenattr.models import VisionTransformer, ViTConfig
from tokenattr.models.vit import ours_to_timm
from tokenattr.protocols import perturbation_test, segmentation_test, versions
from tokenattr.viz import plot_method_grid, to_image_map

IMAGE_SIZE = 64
# A state dict does not record the number of heads; load_model needs it.
DEMO_NUM_HEADS = 4
# Two blocks: on this data four learn no better per step and take twice as long (see TrainSettings).
DEMO_CONFIG = ViTConfig(
    image_size=IMAGE_SIZE,
    patch_size=8,
    num_classes=len(SHAPE_CLASSES),
    embed_dim=64,
    depth=2,
    num_heads=DEMO_NUM_HEADS,
    mlp_dim=128,
    class_names=list(SHAPE_CLASSES),
)
ASSET_PATH = Path(__file__).resolve().parent / "assets" / "demo_vit.safetensors"
METADATA_KEY = "tokenattr_demo"
# Data seeds: training, the held-out set scored at the end of training, and the demo's own test set.
TRAIN_DATA_SEED = 0
VALIDATION_DATA_SEED = 1
DEMO_TEST_SEED = 2
NUM_ACCURACY_IMAGES = 200
PROTOCOL_BATCH_SIZE = 50  # images per explanation batch in the segmentation and perturbation tests
# The perturbation AUC the demo prints: the paper's repository's convention (see PerturbationCurve).
PROTOCOL_AUC = "auc_original"
WHITENING_IMAGES = 500  # training images whose patches initialise the patch embedding
# One thread: this model's matrices are too small to gain from more, a second thread slows training many-fold
# when another process shares the cores, and the weights then do not depend on the machine's core count.
DEMO_THREADS = 1


@dataclass(frozen=True)
class TrainSettings:
    """How :func:`train_demo_model` trains; recorded in the weights' metadata.

    Small batches matter here: per image seen, batch 16 learns faster than 32 or 64, and the model is
    limited by the number of updates it gets in a minute or two, not by over-fitting.
    """

    n_train: int = 6000
    n_val: int = 500
    epochs: int = 8
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05  # of all steps; then cosine decay to zero
    augment: bool = True  # random flips and transposes: the 8 symmetries of the square keep every class
    whitened_patches: bool = True  # start the patch embedding from whitened principal components (see below)
    seed: int = 0  # initialisation, shuffling and augmentation
    data_seed: int = TRAIN_DATA_SEED
    val_seed: int = VALIDATION_DATA_SEED


def pixel_values(images01: Tensor | np.ndarray, config: ViTConfig = DEMO_CONFIG) -> Tensor:
    """The ViT input ``[B, 3, H, W]``: images in [0, 1] normalised by the config's mean and std."""
    return normalize(torch.as_tensor(images01, dtype=torch.float32), config.image_mean, config.image_std)


def init_weights(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw every parameter in place, reproducibly (``seed``), and return the model.

    Linear and patch-embedding weights: truncated normal (at 2 std) with PyTorch's default variance
    ``1 / (3 fan_in)``; biases zero; LayerNorm the identity; position embedding and class token truncated
    normal with std 0.02 (timm). timm's std 0.02 for every weight leaves this tiny model at chance for
    the whole training budget.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            if isinstance(owner, nn.LayerNorm):
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                std = 0.02 if owner is model else (3 * param[0].numel()) ** -0.5
                nn.init.trunc_normal_(param, std=std, a=-2 * std, b=2 * std, generator=generator)
    return model


def init_patch_embedding(conv: nn.Conv2d, inputs: Tensor, scale: float = 0.5, eps: float = 1e-3) -> Tensor:
    """Set the weight of the patch embedding ``conv`` (kernel = stride = the patch) to the top principal components
    of the patches of ``inputs [B, C, H, W]`` (normalised pixels), whitened: each output has variance ``scale²``.

    Returns the shift ``[width]`` that centres the outputs (``-W · mean patch``). A conv with a bias takes it as its
    bias (the ViT); a bias-free one (CLIP's) gets it added wherever every patch token receives it, e.g. the patch
    rows of the position embedding.

    Why: class evidence here is the geometry inside a patch (a corner or an arc) in a random colour. From a
    random embedding the tiny ViT first learns only the object's fill ratio and stalls near 70% accuracy;
    starting from whitened components it reaches 90% in the same budget.
    """
    width, channels, patch = conv.out_channels, conv.in_channels, conv.kernel_size[0]
    if conv.kernel_size != (patch, patch) or conv.stride != conv.kernel_size:
        raise ValueError(f"a patch embedding has square kernel = stride; got {conv.kernel_size}, {conv.stride}")
    patches = inputs.unfold(2, patch, patch).unfold(3, patch, patch)  # [B, C, rows, cols, P, P]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * patch * patch).double()
    if patches.shape[1] < width:
        raise ValueError(f"a patch has {patches.shape[1]} values, fewer than the embedding width {width}")
    mean = patches.mean(dim=0)
    variances, components = torch.linalg.eigh(torch.cov((patches - mean).T))  # ascending
    variances, components = variances.flip(0)[:width], components.flip(1)[:, :width]
    weight = scale * (components / (variances + eps).sqrt()).T  # [width, C * P * P]
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(conv.weight.shape))
    return -(weight @ mean)


def initial_demo_model(settings: TrainSettings, train_images01: Tensor | np.ndarray) -> VisionTransformer:
    """The demo ViT before training: :func:`init_weights`, then (by default) :func:`init_patch_embedding` from the
    first ``WHITENING_IMAGES`` training images ``[B, 3, H, W]`` in [0, 1]."""
    model = init_weights(VisionTransformer(replace(DEMO_CONFIG)), settings.seed)
    if settings.whitened_patches:
        proj = model.patch_embed.proj
        shift = init_patch_embedding(proj, pixel_values(train_images01[:WHITENING_IMAGES]))
        with torch.no_grad():
            proj.bias.copy_(shift)
    return model


def _augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Apply one of the square's 8 symmetries to each image of ``[B, C, S, S]``, drawn at random."""
    flips = torch.rand(3, images.shape[0], generator=generator) < 0.5
    images = torch.where(flips[0].view(-1, 1, 1, 1), images.flip(-1), images)
    images = torch.where(flips[1].view(-1, 1, 1, 1), images.flip(-2), images)
    return torch.where(flips[2].view(-1, 1, 1, 1), images.transpose(-1, -2), images)


@torch.no_grad()
def predict(model: nn.Module, images01: Tensor | np.ndarray, batch_size: int = 256) -> Tensor:
    """Predicted classes ``[B]`` for images ``[B, 3, H, W]`` in [0, 1]."""
    device = next(model.parameters()).device
    inputs = pixel_values(images01, model.config)
    return torch.cat([model(chunk.to(device)).argmax(dim=-1).cpu() for chunk in inputs.split(batch_size)])


def accuracy(model: nn.Module, images01: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """Fraction of images ``[B, 3, H, W]`` (in [0, 1]) whose predicted class is ``labels [B]``."""
    return (predict(model, images01) == torch.as_tensor(labels)).float().mean().item()


def train_demo_model(
    settings: TrainSettings = TrainSettings(), progress: bool = True
) -> tuple[VisionTransformer, dict]:
    """Train the demo ViT on ``make_shapes(settings.n_train, 64, seed=settings.data_seed)`` on the CPU.

    AdamW with linear warm-up and cosine decay, cross-entropy, random square symmetries. The same settings
    give the same weights (on one CPU build: training always uses ``DEMO_THREADS`` threads). Returns the model
    in eval mode and a summary ``{"val_accuracy", "epoch_losses", "train_seconds"}``; the accuracy is on
    ``settings.n_val`` images drawn with ``settings.val_seed``.
    """
    if settings.data_seed == settings.val_seed:
        raise ValueError(f"data_seed and val_seed must differ, both are {settings.data_seed}")
    with _cpu_threads(DEMO_THREADS):
        return _train(settings, progress)


@contextmanager
def _cpu_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op CPU threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fit(
    model: nn.Module,
    inputs: Tensor,
    batch_loss: Callable[[Tensor, Tensor], Tensor],
    settings,
    decays: Callable[[str, nn.Parameter], bool],
    description: str,
    progress: bool,
    after_step: Callable[[], None] | None = None,
) -> list[float]:
    """Train ``model`` on ``inputs`` ``[n_train, ...]`` as both demos do; returns each epoch's mean loss.

    ``settings`` gives ``epochs``, ``batch_size``, ``n_train``, ``lr``, ``weight_decay``, ``warmup_fraction``,
    ``augment`` and ``seed``: AdamW with weight decay on the parameters ``decays(name, param)`` picks, a linear
    warm-up then a cosine decay per step, mini-batches in a seeded random order, random square symmetries when
    ``augment``. ``batch_loss(batch_inputs, batch_indices)`` is a mini-batch's loss; ``after_step`` runs after
    every optimiser step.
    """
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(settings.seed)
    total_steps = settings.epochs * math.ceil(settings.n_train / settings.batch_size)
    warmup_steps = max(1, round(settings.warmup_fraction * total_steps))
    decayed, not_decayed = [], []
    for name, param in model.named_parameters():
        (decayed if decays(name, param) else not_decayed).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": settings.weight_decay}, {"params": not_decayed, "weight_decay": 0.0}],
        lr=settings.lr,
    )

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    epoch_losses = []
    with tqdm(total=total_steps, desc=description, unit="step", disable=not progress) as bar:
        for _ in range(settings.epochs):
            order = torch.randperm(settings.n_train, generator=generator)
            loss_sum = 0.0
            for batch in order.split(settings.batch_size):
                batch_inputs = inputs[batch]
                if settings.augment:
                    batch_inputs = _augment(batch_inputs, generator)
                loss = batch_loss(batch_inputs, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                if after_step is not None:
                    after_step()
                loss_sum += loss.item() * len(batch)
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            epoch_losses.append(loss_sum / settings.n_train)
    return epoch_losses


def _train(settings: TrainSettings, progress: bool) -> tuple[VisionTransformer, dict]:

    started = time.perf_counter()
    train = make_shapes(settings.n_train, IMAGE_SIZE, seed=settings.data_seed)
    inputs, labels = pixel_values(train.images), torch.from_numpy(train.labels)

    model = initial_demo_model(settings, train.images).train()

    def decays(name: str, param: nn.Parameter) -> bool:  # weight matrices, not position embedding, class token (timm)
        return param.dim() > 1 and name not in ("pos_embed", "cls_token")

    epoch_losses = fit(
        model,
        inputs,
        lambda batch_inputs, batch: F.cross_entropy(model(batch_inputs), labels[batch]),
        settings,
        decays,
        "training the demo ViT",
        progress,
    )
    model.eval()
    val = make_shapes(settings.n_val, IMAGE_SIZE, seed=settings.val_seed)
    summary = {
        "val_accuracy": accuracy(model, val.images, val.labels),
        "epoch_losses": epoch_losses,
        "train_seconds": time.perf_counter() - started,
    }
    return model, summary


def save_demo_model(model: VisionTransformer, metadata: dict, path: str | Path = ASSET_PATH) -> Path:
    """Write the weights in timm names as float32 safetensors, with ``metadata`` (JSON) under ``METADATA_KEY``."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {
        name: value.detach().float().contiguous().cpu() for name, value in ours_to_timm(model.state_dict()).items()
    }
    with atomic_path(path) as temporary:
        save_file(state, str(temporary), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return path


def load_demo_model(path: str | Path = ASSET_PATH, device: str | torch.device = "cpu") -> VisionTransformer:
    """The demo ViT from its safetensors file (default: the bundled weights), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no demo weights at {path}; train them with `python -m tokenattr.demo --retrain`")
    model = tokenattr.load_model(path, num_heads=DEMO_NUM_HEADS, device=device)
    model.config.class_names = list(SHAPE_CLASSES)
    return model


def demo_metadata(path: str | Path = ASSET_PATH) -> dict:
    """The training record stored with the demo weights: settings, accuracy, time, versions."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path} has no {METADATA_KEY!r} metadata; is it a tokenattr demo checkpoint?")
    return json.loads(metadata[METADATA_KEY])


def retrain(path: str | Path = ASSET_PATH, settings: TrainSettings = TrainSettings()) -> tuple[VisionTransformer, dict]:
    """Train the demo model and write it, with its training record, to ``path``."""
    model, summary = train_demo_model(settings)
    metadata = {
        "settings": asdict(settings),
        "config": {key: value for key, value in asdict(DEMO_CONFIG).items() if key != "class_names"},
        "class_names": list(SHAPE_CLASSES),
        "val_accuracy": summary["val_accuracy"],
        "final_train_loss": summary["epoch_losses"][-1],
        "train_seconds": round(summary["train_seconds"], 1),
        "torch_threads": DEMO_THREADS,
        "versions": versions(),
    }
    save_demo_model(model, metadata, path)
    return model, metadata


def mask_scores(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """How well maps ``[B, H, W]`` (in [0, 1]) fall on object masks ``[B, H, W]``.

    Returns ``(mass_inside [B], inside_beats_outside [B])``: the fraction of each map's total inside the
    mask (0 for an all-zero map), and whether the mean map value inside the mask exceeds the mean outside.
    """
    maps = maps.double()
    inside = masks.to(torch.bool)
    total = maps.sum(dim=(1, 2))
    mass_in = (maps * inside).sum(dim=(1, 2))
    mass_inside = torch.where(
        total > 0, mass_in / total.clamp(min=torch.finfo(maps.dtype).tiny), torch.zeros_like(total)
    )
    mean_in = mass_in / inside.sum(dim=(1, 2)).clamp(min=1)
    mean_out = (total - mass_in) / (~inside).sum(dim=(1, 2)).clamp(min=1)
    return mass_inside, mean_in > mean_out


def _protocol_scores(model: nn.Module, data: ShapesDataset, count: int, method: str) -> dict:
    """The paper's segmentation test and positive and negative perturbation tests (vis_class top) of ``method``
    on the first ``count`` images of ``data``."""
    images01 = torch.as_tensor(data.images[:count], dtype=torch.float32).split(PROTOCOL_BATCH_SIZE)
    masks = torch.from_numpy(data.masks[:count]).split(PROTOCOL_BATCH_SIZE)
    labels = torch.from_numpy(data.labels[:count]).split(PROTOCOL_BATCH_SIZE)

    def to_input(batch01: Tensor) -> Tensor:
        return pixel_values(batch01, model.config)

    return {
        "segmentation": segmentation_test(
            model, zip(images01, masks), method, normalize=to_input, image_size=IMAGE_SIZE, progress=False
        ),
        "perturbation": {
            kind: perturbation_test(
                model, zip(images01, labels), method, normalize=to_input, positive=positive, progress=False
            )
            for kind, positive in (("positive", True), ("negative", False))
        },
    }


def _print_protocol_table(scores: dict, count: int) -> None:
    """Print the segmentation and perturbation results (x100, as papers print them) and how Ours compares."""
    print(
        f"the paper's protocols on {count} held-out images (x100; explained class: the predicted one; "
        f"AUC = {PROTOCOL_AUC}, accuracy taken as 0 at 100% removed):"
    )
    width = max(len("method"), *map(len, scores)) + 2
    header = ("pixel acc", "mIoU", "mAP", "pos AUC (lower)", "neg AUC (higher)")
    print(f"  {'method':<{width}}" + "".join(f"{column:>18}" for column in header))
    for name, score in scores.items():
        segmentation, perturbation = score["segmentation"], score["perturbation"]
        values = (
            segmentation["pixel_accuracy"],
            segmentation["mean_iou"],
            segmentation["mean_ap"],
            perturbation["positive"][PROTOCOL_AUC],
            perturbation["negative"][PROTOCOL_AUC],
        )
        print(f"  {name:<{width}}" + "".join(f"{100 * value:>18.1f}" for value in values))
    baselines = [name for name in ("raw-attention", "rollout") if name in scores]
    segmentation_metrics = {"pixel_accuracy": "pixel acc", "mean_iou": "mIoU", "mean_ap": "mAP"}
    for ours in (name for name in ("ours-h", "ours-t") if name in scores and baselines):
        wins = [
            label
            for metric, label in segmentation_metrics.items()
            if all(scores[ours]["segmentation"][metric] > scores[name]["segmentation"][metric] for name in baselines)
        ]
        print(
            f"  segmentation: {ours} beats {' and '.join(baselines)} on "
            f"{', '.join(wins) if wins else 'none'} of {', '.join(segmentation_metrics.values())}"
        )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tokenattr.demo",
        description="Explain a tiny ViT trained on synthetic shapes and a tiny BERT trained on synthetic reviews "
        "with every attribution method.",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default: outputs/demo)")
    parser.add_argument(
        "--retrain", action="store_true", help=f"train the demo model again and overwrite {ASSET_PATH.name}"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device for the explanations (default: cpu); training always runs on the CPU",
    )
    parser.add_argument("--num-images", type=int, default=6, help="images shown in the grid (default: 6)")
    parser.add_argument(
        "--eval-images",
        type=int,
        default=100,
        help="held-out images the mask scores, the segmentation and the perturbation tests average over (default: 100)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(tokenattr.METHODS),
        metavar="METHOD",
        help=f"methods to run (default: all; the text side skips pixel methods): {', '.join(tokenattr.METHODS)}",
    )
    parser.add_argument("--skip-images", action="store_true", help="run the text side only")
    parser.add_argument("--skip-text", action="store_true", help="run the image side only")
    args = parser.parse_args(argv)
    if args.skip_images and args.skip_text:
        parser.error("--skip-images and --skip-text together leave nothing to run")
    for flag in ("num_images", "eval_images"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    try:
        args.methods = list(dict.fromkeys(tokenattr.get_method(name).name for name in args.methods))
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the demo (see the module docstring); returns what it writes to ``demo_results.json``."""
    args = _parse_args(argv)
    with _cpu_threads(DEMO_THREADS):
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    results = {} if args.skip_images else _image_demo(args)
    if not args.skip_text:
        if token_methods(args.methods):
            results["text"] = run_text_demo(args.out, args.methods, device=args.device)
            print_text_table(results["text"])
        else:
            print(f"text side skipped: none of {', '.join(args.methods)} explains tokens")
    results["versions"] = versions()
    json_path = args.out / "demo_results.json"
    with atomic_path(json_path) as temporary:
        temporary.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {json_path}")
    return results


def _image_demo(args: argparse.Namespace) -> dict:
    """The image side: explain held-out shapes, draw the grid, print the tables; returns the image results."""
    if args.retrain or not ASSET_PATH.is_file():
        print(f"training the demo model -> {ASSET_PATH}")
        retrain(ASSET_PATH)
    model = load_demo_model(device=args.device)
    training = demo_metadata()

    count = max(NUM_ACCURACY_IMAGES, args.num_images, args.eval_images)
    test = make_shapes(count, IMAGE_SIZE, seed=DEMO_TEST_SEED)
    test_accuracy = accuracy(model, test.images[:NUM_ACCURACY_IMAGES], test.labels[:NUM_ACCURACY_IMAGES])
    explained = max(args.num_images, args.eval_images)
    inputs = pixel_values(test.images[:explained]).to(args.device)
    masks = torch.from_numpy(test.masks[:explained])

    maps_by_method, scores = {}, {}
    for name in args.methods:
        started = time.perf_counter()
        maps = to_image_map(tokenattr.explain(model, inputs, name).cpu(), IMAGE_SIZE)  # [B, 64, 64]
        mass_inside, inside_beats_outside = mask_scores(maps[: args.eval_images], masks[: args.eval_images])
        scores[name] = {
            "mass_inside_mask": mass_inside.mean().item(),
            "inside_beats_outside": inside_beats_outside.double().mean().item(),
            "seconds": round(time.perf_counter() - started, 2),
        }
        maps_by_method[name] = maps[: args.num_images]
        started = time.perf_counter()
        scores[name].update(_protocol_scores(model, test, args.eval_images, name))
        scores[name]["protocol_seconds"] = round(time.perf_counter() - started, 2)

    shown = slice(0, args.num_images)
    predicted = predict(model, test.images[shown])
    row_titles = [
        f"true: {SHAPE_CLASSES[true]}\npred: {SHAPE_CLASSES[pred]}" for true, pred in zip(test.labels[shown], predicted)
    ]
    grid_path = plot_method_grid(
        test.images[shown], maps_by_method, row_titles, masks=masks[shown], path=args.out / "demo_grid.png"
    )

    results = {
        "accuracy": test_accuracy,
        "accuracy_images": NUM_ACCURACY_IMAGES,
        "eval_images": args.eval_images,
        "methods": scores,
        "mask_fraction": masks[: args.eval_images].double().mean().item(),
        "settings": {
            "test_seed": DEMO_TEST_SEED,
            "device": str(args.device),
            "num_images": args.num_images,
            "methods": args.methods,
            "method_options": "each method's defaults for this model",
            "protocols": {
                "segmentation": "predicted class; map > its mean is foreground (ImageNet-segmentation test)",
                "perturbation": "predicted class (vis_class top); pixels set to 0 in [0, 1] space at 10%..90%",
                "auc_printed": PROTOCOL_AUC,
                "batch_size": PROTOCOL_BATCH_SIZE,
            },
            "weights": ASSET_PATH.name,
            "training": training,
        },
    }
    print(f"demo ViT: accuracy {test_accuracy:.1%} on {NUM_ACCURACY_IMAGES} held-out images")
    print(
        f"relevance vs the object mask, mean over {args.eval_images} images (the mask covers "
        f"{results['mask_fraction']:.1%} of the pixels):"
    )
    width = max(len("method"), *map(len, scores)) + 2
    print(f"  {'method':<{width}}{'mass inside':>12}{'in > out':>10}")
    for name, score in scores.items():
        print(f"  {name:<{width}}{score['mass_inside_mask']:>12.3f}{score['inside_beats_outside']:>10.1%}")
    _print_protocol_table(scores, args.eval_images)
    print(f"wrote {grid_path}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
