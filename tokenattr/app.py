"""The ``tokenattr`` command: explain one input, list the methods, and turn evaluation results into paper tables.

    tokenattr explain cat.jpg --checkpoint vit.pth --method ours-h --out cat.png
    tokenattr explain cat.jpg --method all --out grid.png            # the bundled demo ViT, every method
    tokenattr explain --text "a gripping, funny film" --checkpoint bert_dir --out review.html
    tokenattr explain cat.jpg --checkpoint ViT-B-32.pt --prompt "a photo of a cat" --prompt "a dog" --out cat.png
    tokenattr explain cat.jpg --checkpoint ViT-B-32.pt --prompt "a photo of a cat" --out prompt.html  # CLIP's words
    tokenattr methods
    tokenattr report results/seg/*.json results/pert/*.json --out table   # table.md + table.tex

``explain`` dispatches on the loaded model's family (``model.family``): each family is one entry of
``FAMILY_COMMANDS``, which says what kind of input it explains and how.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tokenattr
from tokenattr.io import atomic_path
from tokenattr.report import AUC_KEYS, results_table, to_latex, to_markdown

IMAGE_SUFFIXES = (".png",)
TEXT_SUFFIXES = (".html", ".tex")
MAX_DISPLAY_SIDE = 1024  # the written image keeps the photo's size, scaled down to this longer side at most
METHOD_OPTIONS = {"start_layer": "--start-layer", "steps": "--steps"}


@dataclass(frozen=True)
class FamilyCommand:
    """How ``explain`` handles a model family: the input it explains and the function that explains it.

    ``run(model, source, methods, args)`` gets the decoded input (a PIL image, or the text) and the canonical
    names of the methods to run.
    """

    input_kind: str  # "image" or "text"
    run: Callable[[nn.Module, object, list[str], argparse.Namespace], None]


# --- explain: images (ViT) -------------------------------------------------------------------------------------


def _explain_image(model: nn.Module, image, methods: list[str], args: argparse.Namespace) -> None:
    """Explain a PIL image with a ViT: print the top classes, write a PNG overlay (one method) or grid (several)."""
    from tokenattr.data.transforms import normalize, resize_to_tensor
    from tokenattr.viz import to_image_map

    config = model.config
    inputs = normalize(resize_to_tensor(image, config.image_size), config.image_mean, config.image_std)[None]
    inputs = inputs.to(args.device)
    with torch.no_grad():
        logits = model(inputs)
    target, caption = _report_prediction(logits[0], config.class_names, args)
    display = _display_size(image.height, image.width)
    photo = resize_to_tensor(image, display)  # [3, H, W] in [0, 1]
    maps = {}
    for name in methods:
        relevance = tokenattr.explain(model, inputs, name, target=target, **_options_for(name, args)).cpu()
        square = to_image_map(relevance, config.image_size)  # [1, S, S]: the model sees the photo squashed
        maps[name] = F.interpolate(square[:, None], size=display, mode="bilinear", align_corners=False)[:, 0]
    _write_maps(photo, maps, caption, args)


def _write_maps(photo: Tensor, maps: dict[str, Tensor], caption: list[str], args: argparse.Namespace) -> None:
    """One method: the map ``[1, H, W]`` over ``photo`` ``[3, H, W]`` as a PNG; several: a grid with a caption."""
    from tokenattr.viz import overlay, plot_method_grid

    if len(maps) == 1:
        (only,) = maps.values()
        blended = overlay(photo, only[0], alpha=args.alpha)
        _save_png(np.rint(255 * blended).astype(np.uint8), args.out)
    else:
        plot_method_grid(photo[None], maps, ["\n".join(caption)], path=args.out, alpha=args.alpha, panel_inches=2.2)
    print(f"wrote {args.out}")


def _display_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, MAX_DISPLAY_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(pixels).save(temporary, format="PNG")


# --- explain: text (BERT) --------------------------------------------------------------------------------------


def _explain_text(model: nn.Module, text: str, methods: list[str], args: argparse.Namespace) -> None:
    """Explain a text with a BERT-family classifier: print the top classes, write HTML (or LaTeX) with each word
    coloured by its relevance (the max over its word-pieces, as the rationale test scores words), one row per method.
    """
    from tokenattr.cli import tokenizer_source
    from tokenattr.data.eraser import word_scores_from_pieces, words_to_text
    from tokenattr.models import encode_texts, load_tokenizer

    words = text.split()
    if not words:
        raise ValueError("--text is empty; expected the text to explain")
    tokenizer = load_tokenizer(tokenizer_source(Path(args.checkpoint), args.tokenizer))
    encoded = encode_texts(tokenizer, words_to_text(words), model.max_length, offsets=True)
    offsets = encoded.pop("offset_mapping")[0]
    inputs = {name: value.to(args.device) for name, value in encoded.items()}
    with torch.no_grad():
        logits = model(**inputs)
    target, caption = _report_prediction(logits[0], model.config.class_names, args)
    rows = {}
    for name in methods:
        relevance = tokenattr.explain(model, inputs, name, target=target, **_options_for(name, args))
        rows[name] = word_scores_from_pieces(words, offsets, relevance[0].cpu().numpy())
    _write_text_page(words, rows, f"tokenattr explain: {Path(args.checkpoint).name}", caption, args)


def _write_text_page(
    words: list[str], rows: dict[str, np.ndarray], title: str, caption: list[str], args: argparse.Namespace
) -> None:
    """Each word coloured by its relevance, one row per method: LaTeX for ``.tex``, else a standalone HTML page."""
    from tokenattr.viz import text_html, text_latex

    if args.out.suffix.lower() == ".tex":
        page = text_latex(words, rows)
    else:
        page = text_html(words, rows, title=title, caption="; ".join(caption))
    with atomic_path(args.out) as temporary:
        temporary.write_text(page, encoding="utf-8")
    print(f"wrote {args.out}")


# --- explain: image and prompts (CLIP) -----------------------------------------------------------------------------


def _explain_clip(model: nn.Module, image, methods: list[str], args: argparse.Namespace) -> None:
    """Explain CLIP's similarity of a PIL image with one of the ``--prompt`` texts (the best-matching one, or
    ``--target``): a PNG of the image tokens' relevance (centre crop, as CLIP sees it), or with ``.html``/``.tex``
    the prompt's words coloured by the text tower's relevance."""
    from tokenattr.data.transforms import clip_image_to_tensor, normalize
    from tokenattr.models.clip_tokenizer import load_clip_tokenizer, tokenize_prompts
    from tokenattr.viz import to_image_map

    if not args.prompt:
        raise ValueError("a CLIP checkpoint explains an image against prompts: give one or more --prompt TEXT")
    config = model.config
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    tokenizer_source = args.tokenizer or (checkpoint if checkpoint is not None and checkpoint.is_dir() else None)
    tokenizer = load_clip_tokenizer(tokenizer_source)
    input_ids = tokenize_prompts(tokenizer, args.prompt, config.context_length).to(args.device)
    crop = clip_image_to_tensor(image, config.image_size)  # [3, S, S] in [0, 1]
    pixel_values = normalize(crop, config.image_mean, config.image_std)[None].to(args.device)
    with torch.no_grad():
        logits = model(pixel_values, input_ids)
    target, caption = _report_prediction(logits[0], list(args.prompt), args)
    if args.out.suffix.lower() in TEXT_SUFFIXES:
        _write_clip_prompt_page(model, pixel_values, input_ids[target : target + 1], tokenizer, methods, args, caption)
        return
    inputs = {"pixel_values": pixel_values, "input_ids": input_ids}
    maps = {
        name: to_image_map(
            tokenattr.explain(model, inputs, name, target=target, **_options_for(name, args)).cpu(), config.image_size
        )
        for name in methods
    }
    _write_maps(crop, maps, caption, args)


def _write_clip_prompt_page(model, pixel_values, input_ids, tokenizer, methods, args, caption) -> None:
    """The explained prompt's words, each coloured by the max relevance of its BPE pieces (text tower)."""
    length = int(model.text.end_positions(input_ids)[0])
    piece_ids = input_ids[0, 1:length].tolist()  # without the start and end tokens
    word_pieces: list[list[int]] = []
    word_of_piece = []
    word_open = False
    for piece_id, piece in zip(piece_ids, tokenizer.convert_ids_to_tokens(piece_ids)):
        if not word_open:
            word_pieces.append([])
        word_pieces[-1].append(piece_id)
        word_of_piece.append(len(word_pieces) - 1)
        word_open = not piece.endswith("</w>")  # a word ends with the piece that carries the end-of-word marker
    words = [tokenizer.decode(ids).strip() for ids in word_pieces]
    inputs = {"pixel_values": pixel_values, "input_ids": input_ids}
    rows = {}
    for name in methods:
        relevance = tokenattr.explain(model, inputs, name, target=0, tower="text", **_options_for(name, args))
        scores = np.full(len(words), -np.inf)
        for position, word in enumerate(word_of_piece, start=1):
            scores[word] = max(scores[word], float(relevance[0, position]))
        rows[name] = scores
    _write_text_page(words, rows, "tokenattr explain: CLIP prompt", caption, args)


FAMILY_COMMANDS: dict[str, FamilyCommand] = {
    "vit": FamilyCommand("image", _explain_image),
    "bert": FamilyCommand("text", _explain_text),
    "clip": FamilyCommand("image", _explain_clip),
}


# --- explain: shared steps -------------------------------------------------------------------------------------


def _report_prediction(
    logits: Tensor, class_names: list[str] | None, args: argparse.Namespace
) -> tuple[int, list[str]]:
    """Print the top classes with their softmax scores; return the explained class and caption lines (the
    prediction, and the explained class where it is another)."""
    names = class_names or [f"class {index}" for index in range(logits.shape[-1])]
    probabilities = logits.float().softmax(dim=-1).cpu()
    top = probabilities.topk(min(args.top, len(names)))
    print("top classes:")
    for rank, (probability, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        print(f"  {rank}. {names[index]:<24} {probability:.4f}  (logit {logits[index].item():.3f})")
    predicted = int(top.indices[0])
    target = predicted if args.target is None else _class_index(args.target, names)
    if target != predicted:
        print(f"explaining class {target} ({names[target]}), not the predicted one")
    caption = [f"predicted: {names[predicted]} ({probabilities[predicted]:.1%})"]
    if target != predicted:
        caption.append(f"explained: {names[target]}")
    return target, caption


def _class_index(target: str, names: list[str]) -> int:
    """``--target``: a class index or a class name of the model."""
    if target.lstrip("-").isdigit():
        index = int(target)
        if not 0 <= index < len(names):
            raise ValueError(
                f"--target {index} is out of range: the model has {len(names)} classes (0..{len(names) - 1})"
            )
        return index
    if target in names:
        return names.index(target)
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    raise ValueError(f"--target {target!r} is neither a class index nor a class name of the model ({shown})")


def _options_for(method: str, args: argparse.Namespace) -> dict:
    """The given ``--start-layer``/``--steps`` that ``method`` accepts (with ``--method all``, the others skip them)."""
    accepted = tokenattr.METHODS[method].options
    return {
        name: getattr(args, name) for name in METHOD_OPTIONS if getattr(args, name) is not None and name in accepted
    }


def _methods(choice: str, model: nn.Module, input_kind: str) -> list[str]:
    """Canonical method names for ``--method`` (a name, an alias or ``all``) on ``model``.

    Pixel methods (full LRP) explain image pixels, so they apply to image families only; LRP methods need the
    family's relevance propagation (not CLIP's).
    """
    applicable = [
        name
        for name, method in tokenattr.METHODS.items()
        if method.applies_to(model) and (input_kind == "image" or not method.pixels)
    ]
    if choice == "all":
        return applicable
    method = tokenattr.get_method(choice)  # an unknown name raises, listing the valid ones
    if method.name not in applicable:
        reason = "explains image pixels" if method.pixels and method.applies_to(model) else "propagates LRP relevance"
        raise ValueError(
            f"--method {method.name} {reason} and does not apply to {model.family} models ({input_kind}); "
            f"choose one of: {', '.join(applicable)}, or all"
        )
    return [method.name]


def _check_options(args: argparse.Namespace, methods: list[str]) -> None:
    for name, flag in METHOD_OPTIONS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if name == "steps" and value < 1:
            raise ValueError(f"--steps must be >= 1, got {value}")
        if not any(name in tokenattr.METHODS[method].options for method in methods):
            options = ", ".join(tokenattr.METHODS[methods[0]].options) or "none"
            raise ValueError(f"{flag} does not apply to {', '.join(methods)}; its options: {options}")


def _load_model(args: argparse.Namespace, input_kind: str) -> nn.Module:
    if args.checkpoint is None:
        if input_kind == "text":
            raise ValueError(
                "--text needs --checkpoint: a BERT-family Hugging Face folder (config.json, weights, tokenizer files)"
            )
        if args.prompt:
            from tokenattr.data.synthetic import CAPTIONS
            from tokenattr.demo_clip import load_demo_clip

            print(
                "no --checkpoint: using the bundled demo CLIP (64x64 synthetic shapes captioned "
                f"{CAPTIONS[0]!r} ... {CAPTIONS[-1]!r}: red/green/blue/yellow square/disc/triangle/cross)"
            )
            return load_demo_clip(device=args.device)
        from tokenattr.demo import load_demo_model

        print("no --checkpoint: using the bundled demo ViT (64x64 synthetic shapes: square, disc, triangle, cross)")
        return load_demo_model(device=args.device)
    if not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint} does not exist")
    return tokenattr.load_model(args.checkpoint, num_heads=args.num_heads, device=args.device)


def _read_image(path: str):
    from tokenattr.data.transforms import load_rgb

    if not Path(path).is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    return load_rgb(path)  # raises ValueError naming the file when it cannot be decoded


def run_explain(args: argparse.Namespace) -> None:
    """``tokenattr explain``: check the input and output first, then load the model and dispatch on its family."""
    if (args.image is None) == (args.text is None):
        raise ValueError("give either an IMAGE path or --text TEXT (exactly one)")
    input_kind = "image" if args.image is not None else "text"
    suffixes = IMAGE_SUFFIXES if input_kind == "image" else TEXT_SUFFIXES
    if args.prompt:  # CLIP: the image tokens (.png) or the prompt's words (.html, .tex)
        suffixes = IMAGE_SUFFIXES + TEXT_SUFFIXES
    if args.out.suffix.lower() not in suffixes:
        raise ValueError(f"--out {args.out}: an {input_kind} explanation is written as {' or '.join(suffixes)}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    source = _read_image(args.image) if input_kind == "image" else args.text
    model = _load_model(args, input_kind)
    command = FAMILY_COMMANDS.get(model.family)
    if command is None:
        raise ValueError(f"tokenattr explain does not handle {model.family} models yet ({', '.join(FAMILY_COMMANDS)})")
    if command.input_kind != input_kind:
        given = f"image {args.image}" if input_kind == "image" else "--text"
        raise ValueError(
            f"--checkpoint {args.checkpoint} is a {model.family} model, which explains {command.input_kind}s, "
            f"but an {given} was given; pass {'an IMAGE path' if command.input_kind == 'image' else '--text TEXT'} "
            f"or a checkpoint of a family that explains {input_kind}s "
            f"({', '.join(f for f, c in FAMILY_COMMANDS.items() if c.input_kind == input_kind)})"
        )
    if args.prompt and model.family != "clip":
        raise ValueError(f"--prompt applies to CLIP checkpoints; {args.checkpoint} is a {model.family} model")
    methods = _methods(args.method, model, input_kind)
    _check_options(args, methods)
    command.run(model, source, methods, args)


# --- methods and report ------------------------------------------------------------------------------------------


def run_methods(args: argparse.Namespace) -> None:
    """``tokenattr methods``: every registered method with its description and the original's spellings."""
    width = max(map(len, tokenattr.METHODS)) + 2
    for name, method in tokenattr.METHODS.items():
        scope = "  [images only: pixel relevance]" if method.pixels else ""
        aliases = f"  (also: {', '.join(method.aliases)})" if method.aliases else ""
        print(f"{name:<{width}}{method.description}{scope}{aliases}")


def run_report(args: argparse.Namespace) -> None:
    """``tokenattr report``: print the Markdown and LaTeX tables; with ``--out STEM`` also write STEM.md, STEM.tex."""
    if args.digits < 0:
        raise ValueError(f"--digits must be >= 0, got {args.digits}")
    table = results_table(args.results, auc=args.auc)
    markdown, latex = to_markdown(table, args.digits), to_latex(table, args.digits)
    print(markdown)
    print(latex, end="")
    if args.out is not None:
        for suffix, content in ((".md", markdown), (".tex", latex)):
            path = args.out.with_name(args.out.name + suffix)
            with atomic_path(path) as temporary:
                temporary.write_text(content, encoding="utf-8")
            print(f"wrote {path}")


# --- the parser --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenattr", description="Token attributions inside transformers (Chen et al., TMLR 2022)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    explain = commands.add_parser(
        "explain",
        help="explain one image (ViT) or text (BERT family) and write a picture or a page",
        description="Explain one input: an image with a ViT checkpoint (default: the bundled demo ViT), or --text "
        "with a BERT-family checkpoint. Prints the top classes; writes a PNG overlay (one method) or a grid "
        "(--method all), or for text a self-contained HTML page (or LaTeX with .tex).",
    )
    explain.add_argument("image", nargs="?", help="the image file (any format PIL reads)")
    explain.add_argument("--text", help="the text to explain (instead of an image)")
    explain.add_argument(
        "--prompt",
        action="append",
        help="CLIP: a prompt the image is compared with (repeat for several; the best match is explained)",
    )
    explain.add_argument(
        "--checkpoint",
        help="weights load_model reads (file or Hugging Face folder); default for images: the bundled demo ViT",
    )
    explain.add_argument("--num-heads", type=int, help="attention heads of a state-dict checkpoint (default width/64)")
    explain.add_argument(
        "--tokenizer", type=Path, help="text: tokenizer folder or vocab.txt (default: the checkpoint's)"
    )
    explain.add_argument(
        "--method",
        default="ours-h",
        help=f"a method ({', '.join(tokenattr.METHODS)}; the original's spellings too) or 'all' (default: ours-h)",
    )
    explain.add_argument(
        "--target", help="class (CLIP: prompt) index or name to explain (default: the predicted class, best prompt)"
    )
    explain.add_argument("--start-layer", type=int, help="0-based first block (default: the method's for this model)")
    explain.add_argument("--steps", type=int, help="reasoning-feedback steps of Ours (default: 20)")
    explain.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    explain.add_argument("--top", type=int, default=5, help="top classes printed (default: 5)")
    explain.add_argument("--alpha", type=float, default=0.5, help="image: heatmap opacity in [0, 1] (default: 0.5)")
    explain.add_argument(
        "--out", type=Path, required=True, help="output: .png (image), .html or .tex (text; CLIP: the prompt's words)"
    )
    explain.set_defaults(run=run_explain)

    methods = commands.add_parser("methods", help="list the attribution methods")
    methods.set_defaults(run=run_methods)

    report = commands.add_parser(
        "report",
        help="turn evaluation JSON results into a Markdown table and a LaTeX tabular",
        description="Methods x metrics from the JSON files of ViT/imagenet_seg_eval.py, "
        "ViT/perturbation_eval_from_hdf5.py, BERT/bert_pipeline.py and the BERT perturbation scripts: "
        "x100, each column's best in bold.",
    )
    report.add_argument("results", nargs="+", type=Path, metavar="RESULTS.json", help="results files")
    report.add_argument("--out", type=Path, help="also write OUT.md and OUT.tex")
    report.add_argument("--digits", type=int, default=2, help="decimals of the x100 values (default: 2)")
    report.add_argument(
        "--auc",
        choices=tuple(AUC_KEYS),
        default="original",
        help="perturbation AUC: the original repository's (default) or Chefer et al.'s",
    )
    report.set_defaults(run=run_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0, or 1 after printing what was wrong)."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, NotImplementedError) as error:
        # Bad input, ours or the library's (a checkpoint that does not fit, an undecodable file): one line, no trace.
        print(f"tokenattr {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


__all__ = ["FAMILY_COMMANDS", "FamilyCommand", "build_parser", "main"]
