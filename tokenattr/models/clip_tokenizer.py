"""CLIP's byte-level BPE tokenizer as a ``transformers`` ``CLIPTokenizer``, and OpenAI's ``clip.tokenize``.

OpenAI ``.pt`` checkpoints carry no vocabulary: their tokenizer is built from the merges file
``bpe_simple_vocab_16e6.txt.gz`` (shipped in ``tokenattr/assets``, MIT; see ``assets/NOTICE.txt``), by the rule
of OpenAI's ``simple_tokenizer.py``:

* the 256 byte symbols of :func:`bytes_to_unicode`, in that mapping's order (ids 0–255);
* the same symbols with the end-of-word marker ``</w>`` (ids 256–511);
* the concatenation of each of the first ``49152 - 256 - 2`` merges, in file order (ids 512–49405);
* ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407): 49,408 tokens in all.

Hugging Face CLIP folders bring their own ``tokenizer.json`` or ``vocab.json`` + ``merges.txt``.

Text is cleaned as OpenAI's tokenizer does (:func:`clean_text`) before the BPE; :func:`tokenize_prompts` lays the
ids out as ``clip.tokenize``: start token, pieces, end token, zero padding to the context length.
"""

from __future__ import annotations

import gzip
import html
import warnings
from collections.abc import Sequence
from pathlib import Path

import ftfy
import regex
import torch
from torch import Tensor

BPE_PATH = Path(__file__).resolve().parent.parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
# OpenAI's vocabulary holds 49152 entries before the two special tokens: 2 × 256 byte symbols and the merges.
NUM_MERGES = 49152 - 256 - 2
CONTEXT_LENGTH = 77

_WHITESPACE = regex.compile(r"\s+")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters, in its insertion order.

    Bytes that are printable Latin-1 characters (``!``–``~``, ``¡``–``¬``, ``®``–``ÿ``) stand for themselves and
    come first; the other 68 bytes, in increasing order, get the characters U+0100, U+0101, … . The order of
    the mapping is the order of the first 256 vocabulary ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in mapping]
    mapping.update({byte: chr(256 + rank) for rank, byte in enumerate(others)})
    return mapping


def read_bpe_merges(path: str | Path = BPE_PATH) -> list[tuple[str, str]]:
    """The first :data:`NUM_MERGES` merges of an OpenAI BPE file (``.txt`` or ``.txt.gz``); line 1 is a header."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no BPE merges file at {path}: expected OpenAI's bpe_simple_vocab_16e6.txt.gz")
    if path.suffix == ".gz":
        with gzip.open(path) as file:
            raw = file.read()
    else:
        raw = path.read_bytes()
    lines = [line for line in raw.decode("utf-8").split("\n")[1:] if line][:NUM_MERGES]
    if len(lines) != NUM_MERGES:
        raise ValueError(
            f"{path} is not a CLIP BPE merges file: expected a header and {NUM_MERGES} merge lines, got {len(lines)}"
        )
    merges = [tuple(line.split()) for line in lines]
    bad = next((number for number, pair in enumerate(merges) if len(pair) != 2), None)
    if bad is not None:
        raise ValueError(f"{path}: merge {bad + 1} is {lines[bad]!r}; expected two symbols 'a b'")
    return merges


def bpe_vocabulary(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Token → id in OpenAI's order: byte symbols, byte symbols + ``</w>``, merged pairs, then the special tokens."""
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(symbol + END_OF_WORD for symbol in symbols), *("".join(pair) for pair in merges)]
    tokens += [START_TOKEN, END_TOKEN]
    vocabulary = {token: index for index, token in enumerate(tokens)}
    if len(vocabulary) != len(tokens):
        raise ValueError(f"the BPE merges produce {len(tokens) - len(vocabulary)} duplicate tokens; expected none")
    return vocabulary


def load_clip_tokenizer(source: str | Path | None = None):
    """A ``transformers`` ``CLIPTokenizer``.

    Args:
        source: ``None`` for OpenAI's vocabulary built from the shipped ``bpe_simple_vocab_16e6.txt.gz`` (what
            OpenAI ``.pt`` checkpoints need); a Hugging Face CLIP folder (``tokenizer.json``, or ``vocab.json`` +
            ``merges.txt``); or the path of an OpenAI BPE merges file (``.txt`` or ``.txt.gz``).

    Raises:
        FileNotFoundError: the folder has no tokenizer files, or the path does not exist.
        ValueError: the file is not a BPE merges file.
    """
    from transformers import CLIPTokenizer

    path = BPE_PATH if source is None else Path(source)
    if path.is_dir():
        if not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
            raise FileNotFoundError(
                f"{path} has no tokenizer.json or vocab.json + merges.txt; expected a Hugging Face CLIP folder "
                "(for an OpenAI .pt checkpoint call load_clip_tokenizer() without a source)"
            )
        tokenizer = CLIPTokenizer.from_pretrained(str(path))
    elif path.is_file():
        if not path.name.endswith((".txt", ".txt.gz")):
            raise ValueError(
                f"expected a Hugging Face CLIP folder or an OpenAI BPE merges file (.txt or .txt.gz), got {path} "
                "(for an OpenAI .pt checkpoint call load_clip_tokenizer() without a source)"
            )
        merges = read_bpe_merges(path)
        # transformers 5 ignores keywords it does not know (vocab_file=, merges_file=) and silently builds a
        # two-token vocabulary; vocab= and merges= are the ones it reads, and the tests check the size.
        tokenizer = CLIPTokenizer(vocab=bpe_vocabulary(merges), merges=merges, model_max_length=CONTEXT_LENGTH)
    else:
        raise FileNotFoundError(f"no CLIP tokenizer at {path}: expected a Hugging Face CLIP folder or a BPE file")
    return tokenizer


def clean_text(text: str) -> str:
    """OpenAI's text cleaning: ``ftfy.fix_text`` (mojibake and NFC), HTML entities unescaped twice, runs of
    whitespace collapsed to one space, ends stripped, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def tokenize_prompts(
    tokenizer, prompts: str | Sequence[str], context_length: int = CONTEXT_LENGTH, *, truncate: bool = False
) -> Tensor:
    """OpenAI's ``clip.tokenize``: each prompt as ``[<|startoftext|>, pieces…, <|endoftext|>, 0, …]``.

    Args:
        tokenizer: from :func:`load_clip_tokenizer`.
        prompts: one string or a sequence of strings, cleaned by :func:`clean_text` first.
        context_length: the text tower's number of positions (77 for every released CLIP).
        truncate: cut a prompt that does not fit to ``context_length`` tokens, keeping ``<|endoftext|>`` as the
            last one, with a warning. Without it such a prompt raises, as ``clip.tokenize`` does.

    Returns:
        ``LongTensor [B, context_length]``; padding is id 0, so the end token is each row's largest id (CLIP pools
        the text at the argmax).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("tokenize_prompts got no prompts; expected a string or a non-empty sequence of strings")
    not_text = next((row for row, prompt in enumerate(prompts) if not isinstance(prompt, str)), None)
    if not_text is not None:
        raise TypeError(
            f"prompt {not_text} is {prompts[not_text]!r}, a {type(prompts[not_text]).__name__}; expected a str"
        )
    if context_length < 2:
        raise ValueError(f"context_length must leave room for the start and end tokens, got {context_length}")
    start_id, end_id = tokenizer.convert_tokens_to_ids([START_TOKEN, END_TOKEN])
    pieces = tokenizer([clean_text(prompt) for prompt in prompts], add_special_tokens=False, verbose=False)
    tokens = torch.zeros(len(prompts), context_length, dtype=torch.long)
    truncated = []
    for row, (prompt, ids) in enumerate(zip(prompts, pieces["input_ids"])):
        ids = [start_id, *ids, end_id]
        if len(ids) > context_length:
            if not truncate:
                raise ValueError(
                    f"prompt {row} ({prompt!r}) is {len(ids)} tokens with the start and end tokens, longer than the "
                    f"context length {context_length}; shorten it or pass truncate=True"
                )
            ids = [*ids[: context_length - 1], end_id]
            truncated.append(row)
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    if truncated:
        warnings.warn(
            f"{len(truncated)} of {len(prompts)} prompts exceed {context_length} tokens and are truncated "
            f"(rows {truncated[:10]})",
            stacklevel=2,
        )
    return tokens
