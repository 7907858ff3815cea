"""RoBERTa sequence classifiers on the BERT code path: parity with transformers' ``RobertaForSequenceClassification``
on random weights (position ids from padding, no token types, the dense → tanh → out_proj head), loading from a
state dict and from a folder, saving back, and every token method."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import spread_hf_weights

import tokenattr
from tokenattr.models import BertClassifier
from tokenattr.models.bert import config_to_hf, ours_to_hf, save_hf_folder

PAD, BOS, EOS = 1, 0, 2  # RoBERTa's special ids
SMALL = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=42,  # 40 tokens: positions start at PAD + 1
    type_vocab_size=1,
    layer_norm_eps=1e-5,  # released RoBERTa checkpoints' value, which a bare state dict gets by default
    pad_token_id=PAD,
    num_labels=3,
)
TOKEN_METHODS = [name for name, method in tokenattr.METHODS.items() if not method.pixels]


def _random_hf_roberta(seed: int = 0) -> transformers.RobertaForSequenceClassification:
    torch.manual_seed(seed)
    return spread_hf_weights(transformers.RobertaForSequenceClassification(transformers.RobertaConfig(**SMALL)), seed)


def _padded_batch() -> dict[str, torch.Tensor]:
    """Three sequences ``<s> ... </s>`` of 17, 11 and 6 tokens, right-padded with PAD."""
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, SMALL["vocab_size"], (3, 17), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in ((1, 11), (2, 6)):
        mask[row, length:] = 0
    ids[mask == 0] = PAD
    ids[:, 0] = BOS
    ids[torch.arange(3), mask.sum(dim=1) - 1] = EOS
    return {"input_ids": ids, "attention_mask": mask}


def _hf_logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def hf_and_ours():
    hf = _random_hf_roberta()
    return hf, tokenattr.load_model(hf.state_dict(), num_heads=SMALL["num_attention_heads"])


def test_logits_match_transformers_from_a_state_dict(hf_and_ours):
    hf, ours = hf_and_ours
    assert isinstance(ours, BertClassifier) and ours.family == "bert"  # detected from the keys
    assert (ours.config.variant, ours.config.pad_token_id, ours.config.type_vocab_size) == ("roberta", PAD, 1)
    assert ours.max_length == 40
    batch = _padded_batch()
    with torch.no_grad():
        logits = ours(**batch)
        torch.testing.assert_close(logits, _hf_logits(hf, batch), rtol=1e-5, atol=1e-6)
        # padding does not reach the real tokens, nor shift their positions: each sequence alone gives the same
        for row, length in ((1, 11), (2, 6)):
            alone = ours(batch["input_ids"][row : row + 1, :length])
            torch.testing.assert_close(alone[0], logits[row], rtol=1e-5, atol=1e-6)
        forced = tokenattr.load_model(hf.state_dict(), family="bert", num_heads=4)
        torch.testing.assert_close(forced(**batch), logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="exceed the model's 40 positions"):
        ours(torch.full((1, 41), 5))


def test_hugging_face_folder_round_trip(tmp_path):
    hf = _random_hf_roberta(seed=1)
    hf.config.id2label = {0: "neg", 1: "neutral", 2: "pos"}
    hf.save_pretrained(tmp_path / "hf")
    ours = tokenattr.load_model(tmp_path / "hf")  # family, variant and heads from config.json
    assert ours.config.variant == "roberta" and ours.config.class_names == ["neg", "neutral", "pos"]
    batch = _padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch), _hf_logits(hf, batch), rtol=1e-5, atol=1e-6)
    assert set(ours_to_hf(ours.state_dict(), "roberta")) == set(hf.state_dict())
    assert config_to_hf(ours.config)["model_type"] == "roberta"
    # ours -> a folder that both tokenattr and transformers' own loader read
    save_hf_folder(ours, tmp_path / "saved")
    again = tokenattr.load_model(tmp_path / "saved")
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    assert isinstance(theirs, transformers.RobertaForSequenceClassification)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch), ours(**batch), rtol=0, atol=0)
        torch.testing.assert_close(_hf_logits(theirs, batch), _hf_logits(hf, batch), rtol=1e-5, atol=1e-6)


def test_encoder_only_checkpoint_gets_a_fresh_head():
    """RobertaModel keeps a pooler that RobertaForSequenceClassification does not use: it is dropped, and the
    whole head (dense and out_proj, our pooler and classifier) is new, as transformers makes it."""
    torch.manual_seed(0)
    encoder = transformers.RobertaModel(transformers.RobertaConfig(**SMALL))
    state = {f"roberta.{name}": value for name, value in encoder.state_dict().items()}
    assert "roberta.pooler.dense.weight" in state
    with pytest.warns(UserWarning, match=r"without a classifier \(RobertaModel\).*head \(pooler, classifier\)"):
        ours = tokenattr.load_model(state, num_heads=4, num_labels=5)
    assert ours.config.variant == "roberta" and ours.classifier.out_features == 5
    assert not torch.equal(ours.pooler.weight, state["roberta.pooler.dense.weight"])


@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_every_token_method_runs(hf_and_ours, method):
    _, model = hf_and_ours
    batch = _padded_batch()
    options = {"steps": 3} if method.startswith("ours") else {}
    relevance = tokenattr.explain(model, batch, method, target=1, **options)
    assert relevance.shape == batch["input_ids"].shape
    assert torch.isfinite(relevance).all()
    assert not relevance[:, 0].any() and not relevance[batch["attention_mask"] == 0].any()
    assert relevance[batch["attention_mask"] == 1].abs().sum() > 0
