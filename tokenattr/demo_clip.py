"""The demo CLIP: a tiny CLIP trained contrastively on generated captioned shapes ("a red square"), for the
notebooks and ``tokenattr explain --prompt`` to use offline.

    python -m tokenattr.demo_clip            # train it again and overwrite assets/demo_clip.safetensors

The data (:func:`tokenattr.data.synthetic.make_captioned_shapes`) knows where each caption's evidence is: the
object's mask in the image, and the colour and shape words in the text. Training uses only the rows of the token
embedding that the captions use; every other row of the full (OpenAI) vocabulary is zero, so a word the model
never saw carries no signal. The file stores those rows and their token ids instead of the full embedding
(:func:`save_demo_clip`), the other weights in OpenAI's names as float16, and its training settings and zero-shot
accuracy in its metadata; :func:`load_demo_clip` expands it back to a normal :class:`CLIPModel` over the full
vocabulary, which the real CLIP tokenizer feeds.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import tokenattr
from tokenattr.data.synthetic import CAPTIONS, make_captioned_shapes
from tokenattr.data.transforms import normalize
from tokenattr.demo import DEMO_THREADS, WHITENING_IMAGES, _cpu_threads, fit, init_patch_embedding, init_weights
from tokenattr.io import atomic_path
from tokenattr.models.clip import CLIPConfig, CLIPModel, ours_to_openai
from tokenattr.models.clip_tokenizer import load_clip_tokenizer, tokenize_prompts
from tokenattr.protocols import versions

ASSET_PATH = Path(__file__).resolve().parent / "assets" / "demo_clip.safetensors"
METADATA_KEY = "tokenattr_demo_clip"
# The token embedding's stored rows and their ids (the file's only tensors not in OpenAI's names).
TOKEN_ROWS_KEY, TOKEN_IDS_KEY = "token_embedding.rows", "token_embedding.ids"
# Widths are multiples of 64: in OpenAI's names a checkpoint gets its head count as width / 64, so the expanded
# weights are a faithful OpenAI checkpoint. Two heads per block: with one, Ours' head-wise clamp empties whole maps.
# One block per tower keeps the file under 1 MB (the MLPs are 4 x width wide); the images are the demo ViT's
# 64 px in 8 px patches, whose corners and arcs a whitened patch embedding sees from the start.
DEMO_CLIP_CONFIG = CLIPConfig(
    embed_dim=64,
    image_size=64,
    patch_size=8,
    vision_width=128,
    vision_layers=1,
    vision_heads=2,
    context_length=8,  # "<start> a red square <end>" and room to spare
    text_width=128,
    text_layers=1,
    text_heads=2,
)
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature
MAX_LOGIT_SCALE = math.log(100.0)  # and its clamp


@dataclass(frozen=True)
class TrainSettings:
    """How :func:`train_demo_clip` trains; recorded in the weights' metadata.

    Colours are learnt at once; shapes are the hard part (square against disc above all). On the CPU here, with
    these settings and 1,500 steps the model reaches about 56% over the 16 captions; 3,000 steps, twice the learning
    rate, larger objects, a second image block, or damping the noise-level patch components before whitening gave
    no more than 61%.
    """

    config: CLIPConfig = field(default_factory=lambda: replace(DEMO_CLIP_CONFIG))
    n_train: int = 6000
    n_val: int = 500
    epochs: int = 4
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05  # of all steps; then cosine decay to zero
    augment: bool = True  # random flips and transposes keep every caption
    seed: int = 0  # initialisation, shuffling and augmentation
    data_seed: int = 0
    val_seed: int = 1


@functools.cache
def caption_ids(context_length: int = DEMO_CLIP_CONFIG.context_length) -> Tensor:
    """``LongTensor [len(CAPTIONS), context_length]``: every caption through OpenAI's tokenizer."""
    return tokenize_prompts(load_clip_tokenizer(), CAPTIONS, context_length)


def pixel_values(images01: Tensor | np.ndarray, config: CLIPConfig = DEMO_CLIP_CONFIG) -> Tensor:
    """The CLIP input ``[B, 3, H, W]``: images in [0, 1] normalised by the config's mean and std."""
    return normalize(torch.as_tensor(images01, dtype=torch.float32), config.image_mean, config.image_std)


def initial_demo_clip(settings: TrainSettings, train_images01: Tensor | np.ndarray) -> CLIPModel:
    """The demo CLIP before training, over the compact vocabulary of :func:`caption_vocabulary` (train it on
    ``caption_ids(...)`` mapped by :func:`compact_ids`): :func:`tokenattr.demo.init_weights` per tower (seeds
    ``settings.seed`` and ``settings.seed + 1``), the patch embedding whitened on the first ``WHITENING_IMAGES``
    training images ``[B, 3, H, W]`` in [0, 1] (:func:`tokenattr.demo.init_patch_embedding`; the bias-free conv's
    centring shift goes into the patch rows of the position embedding), and CLIP's initial temperature."""
    vocabulary = caption_vocabulary(settings.config.context_length)
    model = CLIPModel(replace(settings.config, vocab_size=len(vocabulary)))
    init_weights(model.visual, settings.seed)
    init_weights(model.text, settings.seed + 1)
    shift = init_patch_embedding(model.visual.conv1, pixel_values(train_images01[:WHITENING_IMAGES], settings.config))
    with torch.no_grad():
        model.visual.positional_embedding[1:] += shift.to(model.visual.positional_embedding)
        model.logit_scale.fill_(INITIAL_LOGIT_SCALE)
    return model


def caption_vocabulary(context_length: int = DEMO_CLIP_CONFIG.context_length) -> Tensor:
    """``LongTensor [V]``: the token ids the captions use (padding included), ascending."""
    return caption_ids(context_length).unique()


def compact_ids(input_ids: Tensor, vocabulary: Tensor) -> Tensor:
    """``input_ids`` as ranks in ``vocabulary`` (ascending). Ranks keep the order of ids, so the end-of-text token
    stays each prompt's highest id and the text pools where it would with the full vocabulary."""
    return torch.searchsorted(vocabulary, input_ids)


def full_vocabulary(model: CLIPModel, vocabulary: Tensor, vocab_size: int) -> CLIPModel:
    """The same CLIP over all ``vocab_size`` token ids: the compact embedding's rows go to the ids of
    ``vocabulary``, every other row is zero (a word the model never saw carries no signal)."""
    compact = model.text.token_embedding.weight
    full = CLIPModel(replace(model.config, vocab_size=vocab_size)).to(compact.device)
    state = model.state_dict()
    embedding = torch.zeros(vocab_size, compact.shape[1], dtype=compact.dtype, device=compact.device)
    embedding[vocabulary.to(compact.device)] = compact.detach()
    state["text.token_embedding.weight"] = embedding
    full.load_state_dict(state)
    return full.train(model.training)


def contrastive_loss(logits_per_image: Tensor, labels: Tensor) -> Tensor:
    """Symmetric InfoNCE of ``logits_per_image [B, B]`` between images and captions with caption ``labels [B]``.

    Images that share a caption are all positives of each other's caption: each row's target is spread evenly
    over the columns with its label (CLIP's identity target when the labels are distinct).
    """
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    image_loss = -(targets * logits_per_image.log_softmax(dim=1)).sum(dim=1).mean()
    text_loss = -(targets * logits_per_image.T.log_softmax(dim=1)).sum(dim=1).mean()
    return (image_loss + text_loss) / 2


@torch.no_grad()
def zero_shot_predict(model: CLIPModel, images01: Tensor | np.ndarray, batch_size: int = 256) -> Tensor:
    """``[B]`` the index into ``CAPTIONS`` of the best-matching caption for each image ``[B, 3, H, W]`` in [0, 1]."""
    device = next(model.parameters()).device
    prompts = caption_ids(model.config.context_length).to(device)
    inputs = pixel_values(images01, model.config)
    return torch.cat([model(chunk.to(device), prompts).argmax(dim=-1).cpu() for chunk in inputs.split(batch_size)])


def zero_shot_accuracy(model: CLIPModel, images01: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """Fraction of images whose best-matching caption among ``CAPTIONS`` is ``labels [B]``."""
    return (zero_shot_predict(model, images01) == torch.as_tensor(labels)).float().mean().item()


def train_demo_clip(settings: TrainSettings = TrainSettings(), progress: bool = True) -> tuple[CLIPModel, dict]:
    """Train the demo CLIP on ``make_captioned_shapes(settings.n_train, seed=settings.data_seed)`` on the CPU.

    Symmetric InfoNCE (:func:`contrastive_loss`) over batches of images and their captions, AdamW with linear
    warm-up and cosine decay, random square symmetries. The same settings give the same weights (on one CPU
    build: training uses ``DEMO_THREADS`` threads). Returns the model in eval mode and a summary
    ``{"zero_shot_accuracy", "epoch_losses", "train_seconds"}``; the accuracy is over all ``CAPTIONS`` on
    ``settings.n_val`` images drawn with ``settings.val_seed``.
    """
    if settings.data_seed == settings.val_seed:
        raise ValueError(f"data_seed and val_seed must differ, both are {settings.data_seed}")
    with _cpu_threads(DEMO_THREADS):
        return _train(settings, progress)


def _train(settings: TrainSettings, progress: bool) -> tuple[CLIPModel, dict]:

    started = time.perf_counter()
    size = settings.config.image_size
    train = make_captioned_shapes(settings.n_train, size, seed=settings.data_seed)
    inputs, labels = pixel_values(train.images, settings.config), torch.from_numpy(train.labels)
    vocabulary = caption_vocabulary(settings.config.context_length)
    prompts = compact_ids(caption_ids(settings.config.context_length), vocabulary)

    model = initial_demo_clip(settings, train.images).train()

    def decays(name: str, param: torch.nn.Parameter) -> bool:  # weight matrices, not embeddings (open_clip)
        return param.dim() > 1 and "embedding" not in name

    def clamp_temperature() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)

    epoch_losses = fit(
        model,
        inputs,
        lambda batch_inputs, batch: contrastive_loss(model(batch_inputs, prompts[labels[batch]]), labels[batch]),
        settings,
        decays,
        "training the demo CLIP",
        progress,
        after_step=clamp_temperature,
    )
    model = full_vocabulary(model, vocabulary, settings.config.vocab_size).eval()
    val = make_captioned_shapes(settings.n_val, size, seed=settings.val_seed)
    summary = {
        "zero_shot_accuracy": zero_shot_accuracy(model, val.images, val.labels),
        "epoch_losses": epoch_losses,
        "train_seconds": time.perf_counter() - started,
    }
    return model, summary


def save_demo_clip(model: CLIPModel, metadata: dict, path: str | Path = ASSET_PATH) -> Path:
    """Write the weights as float16 safetensors, with ``metadata`` (JSON) under ``METADATA_KEY``: OpenAI's names,
    except that the token embedding is stored as its rows for the captions' tokens (``TOKEN_ROWS_KEY``) and their
    ids (``TOKEN_IDS_KEY``); every other row must be zero (as :func:`full_vocabulary` leaves them)."""
    from safetensors.torch import save_file

    state = ours_to_openai(model.state_dict())
    embedding = state.pop("token_embedding.weight")
    ids = caption_vocabulary(model.config.context_length).to(embedding.device)
    others = torch.ones(embedding.shape[0], dtype=torch.bool, device=embedding.device)
    others[ids] = False
    if embedding[others].any():
        raise ValueError("the token embedding has non-zero rows for tokens the captions do not use")
    state[TOKEN_ROWS_KEY], state[TOKEN_IDS_KEY] = embedding[ids], ids
    state = {
        name: (value.half() if value.is_floating_point() else value).detach().contiguous().cpu()
        for name, value in state.items()
    }
    path = Path(path)
    with atomic_path(path) as temporary:
        save_file(state, str(temporary), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return path


def load_demo_clip(path: str | Path = ASSET_PATH, device: str | torch.device = "cpu") -> CLIPModel:
    """The demo CLIP from its safetensors file (default: the bundled weights), in float32 and eval mode, over the full
    OpenAI vocabulary (``metadata["settings"]["config"]["vocab_size"]`` rows, zero except the captions' tokens).

    The file itself is not an OpenAI checkpoint (its token embedding is stored compactly, see
    :func:`save_demo_clip`), so ``tokenattr.load_model`` does not read it directly; the state dict this expands it
    to is one, and is what is loaded. Its prompts are ``CAPTIONS`` tokenised to ``model.config.context_length``
    (:func:`caption_ids`).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no demo CLIP weights at {path}; train them with `python -m tokenattr.demo_clip`")
    state = load_file(str(path))
    missing = [key for key in (TOKEN_ROWS_KEY, TOKEN_IDS_KEY) if key not in state]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; is it a demo CLIP written by save_demo_clip?")
    rows, ids = state.pop(TOKEN_ROWS_KEY), state.pop(TOKEN_IDS_KEY)
    vocab_size = demo_clip_metadata(path)["settings"]["config"]["vocab_size"]
    embedding = rows.new_zeros(vocab_size, rows.shape[1])
    embedding[ids] = rows
    state["token_embedding.weight"] = embedding
    return tokenattr.load_model(state, family="clip", device=device)


def demo_clip_metadata(path: str | Path = ASSET_PATH) -> dict:
    """The training record stored with the demo CLIP: settings, zero-shot accuracy, time, versions."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path} has no {METADATA_KEY!r} metadata; is it a tokenattr demo CLIP checkpoint?")
    return json.loads(metadata[METADATA_KEY])


def settings_from_metadata(metadata: dict) -> TrainSettings:
    """The :class:`TrainSettings` a demo CLIP's metadata records (to train it again)."""
    recorded = dict(metadata["settings"])
    config = {key: tuple(value) if isinstance(value, list) else value for key, value in recorded.pop("config").items()}
    return TrainSettings(config=CLIPConfig(**config), **recorded)


def retrain(path: str | Path = ASSET_PATH, settings: TrainSettings = TrainSettings()) -> tuple[CLIPModel, dict]:
    """Train the demo CLIP and write it, with its training record, to ``path``."""
    model, summary = train_demo_clip(settings)
    metadata = {
        "settings": asdict(settings),
        "captions": list(CAPTIONS),
        "zero_shot_accuracy": summary["zero_shot_accuracy"],
        "final_train_loss": summary["epoch_losses"][-1],
        "train_seconds": round(summary["train_seconds"], 1),
        "torch_threads": DEMO_THREADS,
        "versions": versions(),
    }
    save_demo_clip(model, metadata, path)
    return model, metadata


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tokenattr.demo_clip",
        description="Train the demo CLIP on generated captioned shapes and write its weights.",
    )
    parser.add_argument("--out", type=Path, default=ASSET_PATH, help=f"weights file (default: {ASSET_PATH})")
    args = parser.parse_args(argv)
    _, metadata = retrain(args.out)
    print(
        f"wrote {args.out}: zero-shot accuracy {metadata['zero_shot_accuracy']:.3f} over {len(CAPTIONS)} captions, "
        f"trained in {metadata['train_seconds']} s"
    )


if __name__ == "__main__":
    main()
