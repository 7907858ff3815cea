"""The CLIP tokenizer against known ids, the original's tokens, and a reference BPE written here.

The expected ids for new prompts come from ``reference_ids`` below, an independent re-implementation of OpenAI's
``simple_tokenizer.py`` pipeline from the raw merges file: ftfy + HTML unescape + whitespace collapse + lower case,
OpenAI's split pattern (``regex`` module, IGNORECASE), UTF-8 bytes to GPT-2's printable characters, then the
textbook BPE loop (merge the lowest-ranked adjacent pair everywhere until none is in the merge list), with ids
numbered as OpenAI numbers its vocabulary. The library instead runs the ``tokenizers`` BPE of
``transformers.CLIPTokenizer``; agreement on non-ASCII text checks the vocabulary, the byte map and the cleaning.
"""

import gzip
import html
import json
import warnings
from pathlib import Path

import ftfy
import numpy as np
import pytest
import regex
import torch

from tokenattr.models.clip_tokenizer import (
    BPE_PATH,
    load_clip_tokenizer,
    read_bpe_merges,
    tokenize_prompts,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "clip" / "outputs.npz"
SPLIT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
PROMPTS = [
    "café",
    "naïve résumé",
    "a photo of a 🐱 cat 🐶",
    "一只猫的照片",
    "Ünïcödé ÉCOLE Straße",
    "it's   a\tphoto\nof  the   DOG's toy!!!",
    "fish &amp; chips &lt;3",
    "cafÃ©",  # mojibake of "café" that ftfy repairs
    "2023 was 42% better, ok?",
    "Привет мир",
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


@pytest.fixture(scope="module")
def reference():
    """Raw merges file → (merge ranks, vocabulary), numbered as OpenAI numbers its vocabulary."""
    with gzip.open(BPE_PATH, "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + 48894]]  # header line, then 49152 - 256 - 2 merges
    byte_chars = {}  # byte → printable character, GPT-2 style
    shifted = 0
    kept = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    for byte in sorted(kept):
        byte_chars[byte] = chr(byte)
    for byte in range(256):
        if byte not in kept:
            byte_chars[byte] = chr(256 + shifted)
            shifted += 1
    tokens = list(byte_chars.values())
    tokens += [token + "</w>" for token in tokens]
    tokens += [first + second for first, second in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    return ranks, {token: index for index, token in enumerate(tokens)}, byte_chars


def reference_ids(text, reference):
    ranks, vocabulary, byte_chars = reference
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    text = regex.sub(r"\s+", " ", text).strip().lower()
    ids = [vocabulary["<|startoftext|>"]]
    for piece in SPLIT.findall(text):
        symbols = [byte_chars[byte] for byte in piece.encode("utf-8")]
        symbols[-1] += "</w>"
        while len(symbols) > 1:
            pair = min(zip(symbols, symbols[1:]), key=lambda candidate: ranks.get(candidate, float("inf")))
            if pair not in ranks:
                break
            merged, position = [], 0
            while position < len(symbols):
                if tuple(symbols[position : position + 2]) == pair:
                    merged.append(pair[0] + pair[1])
                    position += 2
                else:
                    merged.append(symbols[position])
                    position += 1
            symbols = merged
        ids += [vocabulary[symbol] for symbol in symbols]
    return ids + [vocabulary["<|endoftext|>"]]


def test_vocabulary_is_openais(tokenizer, reference):
    # transformers 5 silently drops keywords it does not know and falls back to a tiny vocabulary; check the size
    # and every entry.
    assert len(tokenizer) == 49408
    assert tokenizer.get_vocab() == reference[1]
    assert tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]


def test_known_ids(tokenizer):
    tokens = tokenize_prompts(tokenizer, "a photo of a cat")
    assert tokens.shape == (1, 77) and tokens.dtype == torch.long
    assert tokens[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokens[0, 7:].eq(0).all()


def test_original_text_tokens(tokenizer):
    expected = torch.from_numpy(np.load(REFERENCE)["text_tokens"])
    tokens = tokenize_prompts(tokenizer, ["a photo of a cat", "a photo of a dog", "a photo of a car"])
    assert torch.equal(tokens, expected)
    assert tokens.argmax(dim=-1).tolist() == [6, 6, 6]  # CLIP pools at the end token


@pytest.mark.parametrize("prompt", PROMPTS)
def test_non_ascii_matches_reference_bpe(tokenizer, reference, prompt):
    expected = reference_ids(prompt, reference)
    assert len(expected) > 2
    tokens = tokenize_prompts(tokenizer, prompt)[0]
    assert tokens[: len(expected)].tolist() == expected
    assert tokens[len(expected) :].eq(0).all()


def test_cleaning(tokenizer):
    """Mojibake, HTML entities, case and whitespace are undone before the BPE, as OpenAI's tokenizer does."""
    tokens = tokenize_prompts(tokenizer, ["café", "cafÃ©", "  CAFÉ ", "caf&eacute;", "a  photo\tof\na cat"])
    assert all(torch.equal(tokens[0], row) for row in tokens[1:4])
    assert torch.equal(tokens[4], tokenize_prompts(tokenizer, "a photo of a cat")[0])


def test_batch_and_padding(tokenizer):
    tokens = tokenize_prompts(tokenizer, ["a cat", "a photo of a dog on a sofa"], context_length=12)
    assert tokens.shape == (2, 12)
    lengths = [4, 10]
    for row, length in enumerate(lengths):
        assert tokens[row, length - 1] == 49407 and tokens[row].argmax() == length - 1
        assert tokens[row, length:].eq(0).all()
    with pytest.raises(ValueError, match="got no prompts"):
        tokenize_prompts(tokenizer, [])
    with pytest.raises(TypeError, match=r"prompt 1 is \('tench', 'Tinca tinca'\), a tuple; expected a str"):
        tokenize_prompts(tokenizer, ["a cat", ("tench", "Tinca tinca")])
    with pytest.raises(ValueError, match="room for the start and end tokens"):
        tokenize_prompts(tokenizer, "a cat", context_length=1)


def test_too_long_prompt(tokenizer):
    fits = " ".join(["cat"] * 75)  # 75 pieces + start + end = 77
    assert tokenize_prompts(tokenizer, fits)[0, -1] == 49407
    too_long = fits + " dog"
    with pytest.raises(ValueError, match=r"prompt 1 \('cat cat .* dog'\) is 78 tokens.*context length 77.*truncate"):
        tokenize_prompts(tokenizer, ["a cat", too_long])
    with pytest.warns(UserWarning, match="1 of 2 prompts exceed 77 tokens"):
        tokens = tokenize_prompts(tokenizer, ["a cat", too_long], truncate=True)
    assert tokens[1, :76].tolist() == [49406] + [2368] * 75
    assert tokens[1, 76] == 49407
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize_prompts(tokenizer, fits, truncate=True)  # no warning when nothing is cut


def test_hugging_face_folders(tokenizer, reference, tmp_path):
    prompts = ["a photo of a cat", *PROMPTS]
    expected = tokenize_prompts(tokenizer, prompts)

    saved = tmp_path / "saved"  # tokenizer.json + tokenizer_config.json, as save_pretrained writes them
    tokenizer.save_pretrained(saved)
    assert (saved / "tokenizer.json").is_file()

    vocab_merges = tmp_path / "vocab_merges"  # the older layout: vocab.json + merges.txt only
    vocab_merges.mkdir()
    (vocab_merges / "vocab.json").write_text(json.dumps(reference[1]), encoding="utf-8")
    merges = sorted(reference[0], key=reference[0].get)
    lines = ["#version: 0.2", *(" ".join(pair) for pair in merges)]
    (vocab_merges / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    for folder in (saved, vocab_merges):
        loaded = load_clip_tokenizer(folder)
        assert len(loaded) == 49408
        assert torch.equal(tokenize_prompts(loaded, prompts), expected)

    # The merges file itself (here uncompressed) works as a source too.
    plain = tmp_path / "bpe.txt"
    plain.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert torch.equal(tokenize_prompts(load_clip_tokenizer(plain), prompts), expected)


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or vocab.json"):
        load_clip_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no CLIP tokenizer at"):
        load_clip_tokenizer(tmp_path / "missing")
    checkpoint = tmp_path / "ViT-B-32.pt"
    checkpoint.write_bytes(b"not a tokenizer")
    with pytest.raises(ValueError, match=r"\.pt checkpoint call load_clip_tokenizer\(\) without a source"):
        load_clip_tokenizer(checkpoint)
    short = tmp_path / "short.txt"
    short.write_text("#version: 0.2\ni n\nt h\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a CLIP BPE merges file: expected a header and 48894 merge lines, got 2"):
        read_bpe_merges(short)
