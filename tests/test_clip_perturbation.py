"""The CLIP zero-shot perturbation test (spec §5.6): ``clip_perturbation_test`` and ``CLIP/perturbation_eval.py`` on
a tiny random CLIP and a tiny ImageNet validation folder, checked against a direct computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script, random_vit
from PIL import Image
from sklearn.metrics import auc

import tokenattr
import tokenattr.protocols
from tokenattr.data import load_rgb, normalize
from tokenattr.data.imagenet import zero_shot_prompts
from tokenattr.data.transforms import clip_image_to_tensor
from tokenattr.models.clip import CLIP_MEAN, CLIPConfig, CLIPModel, ours_to_openai
from tokenattr.models.clip_tokenizer import load_clip_tokenizer, tokenize_prompts
from tokenattr.models.vit import ours_to_timm

script = load_script("perturbation_eval", folder="CLIP")

SIZE = 32
LEVELS = np.arange(0, 1.1, 0.1)  # the original's x-grid of the AUC
# Whether each generated image goes into the folder of the class the model predicts for it: 2 of 7 do not.
CORRECT = (True, True, False, True, True, False, True)
PERT_INDEX = [5, 0, 3, 6, 1, 2]  # a subset in its own order, as pert_index.npy is


def random_clip() -> CLIPModel:
    """A tiny CLIP with every weight drawn (the default init leaves zeros); heads = width / 64, as OpenAI's
    archives imply. The real tokenizer needs the real vocabulary size."""
    config = CLIPConfig(
        embed_dim=32,
        image_size=SIZE,
        patch_size=8,
        vision_width=128,
        vision_layers=2,
        vision_heads=2,
        context_length=20,  # the longest prompt is 18 tokens; 77 would make the text tower 4x slower
        text_width=64,
        text_layers=1,
        text_heads=1,
    )
    model = CLIPModel(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "ln_" in name:
                param.copy_((1 + 0.1 * noise) if name.endswith("weight") else 0.05 * noise)
            elif name == "logit_scale":
                param.fill_(math.log(100.0))
            else:
                param.copy_(1.5 * noise / math.sqrt(param.shape[-1]) if param.dim() > 1 else 0.3 * noise)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer) -> dict:
    """The checkpoint, an ImageNet val folder of 1,000 class folders holding 7 noise images (5 in the folder of
    the class the model predicts for them), the subset file, and what a direct computation needs."""
    tmp = tmp_path_factory.mktemp("clip_perturbation")
    checkpoint = tmp / "ViT-tiny.pt"
    torch.save(ours_to_openai(random_clip().state_dict()), checkpoint)
    model = tokenattr.load_model(checkpoint)
    input_ids = tokenize_prompts(tokenizer, zero_shot_prompts(), model.config.context_length)
    with torch.no_grad():
        text_features = model.text_features(input_ids)

    rng = np.random.default_rng(0)
    root = tmp / "val"
    wnids = [f"n{index:08d}" for index in range(1000)]
    for wnid in wnids:
        (root / wnid).mkdir(parents=True)
    samples = []
    for index, correct in enumerate(CORRECT):
        image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        with torch.no_grad():
            predicted = int(zero_shot(model, text_features, clip_inputs(model, image)).argmax())
        label = predicted if correct else (predicted + 1) % 1000
        path = root / wnids[label] / f"ILSVRC2012_val_{index:08d}.png"
        image.save(path)
        samples.append((wnids[label], path.name, path, label))
    samples = [(path, label) for *_, path, label in sorted(samples)]  # ImageFolder order: class, then file
    pert_index = tmp / "pert_index.npy"
    np.save(pert_index, np.array(PERT_INDEX, dtype=np.int64))
    return {
        "tmp": tmp,
        "model": model,
        "input_ids": input_ids,
        "text_features": text_features,
        "subset": [samples[index] for index in PERT_INDEX],
        "flags": [
            *("--checkpoint", str(checkpoint), "--imagenet-path", str(root), "--pert-index", str(pert_index)),
            *("--batch-size", "2", "--num-workers", "0"),
        ],
    }


@pytest.fixture(autouse=True)
def shared_tokenizer(monkeypatch, tokenizer):
    """The script's tokenizer is the one already loaded (building it costs seconds)."""
    monkeypatch.setattr(script, "load_clip_tokenizer", lambda source=None: tokenizer)


def clip_inputs(model: CLIPModel, image: Image.Image) -> torch.Tensor:
    return normalize(clip_image_to_tensor(image, SIZE)[None], model.config.image_mean, model.config.image_std)


def zero_shot(model: CLIPModel, text_features: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
    return model.similarity(model.image_features(pixel_values), text_features)


def predictions(setup: dict) -> list[int]:
    """The zero-shot prediction for each image of the subset."""
    model, text_features = setup["model"], setup["text_features"]
    with torch.no_grad():
        return [
            int(zero_shot(model, text_features, clip_inputs(model, load_rgb(path))).argmax())
            for path, _ in setup["subset"]
        ]


def direct(setup: dict, method: str, target: bool, positive: bool, **options) -> tuple[np.ndarray, float]:
    """Accuracy per level and the original's AUC, one image at a time, written out as spec §5.6 describes."""
    model, input_ids, text_features = setup["model"], setup["input_ids"], setup["text_features"]
    hits = []
    for (path, label), predicted in zip(setup["subset"], predictions(setup)):
        pixel_values = clip_inputs(model, load_rgb(path))
        prompt = label if target else predicted
        inputs = {"pixel_values": pixel_values, "input_ids": input_ids[prompt][None]}
        relevance = tokenattr.explain(model, inputs, method, target=torch.tensor([0]), **options)
        scores = tokenattr.to_image_map(relevance, (SIZE, SIZE))[0].flatten()
        row = []
        for level in (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1):
            removed = torch.topk(scores if positive else -scores, int(SIZE * SIZE * level)).indices
            perturbed = pixel_values.clone().reshape(3, -1)
            perturbed[:, removed] = 0  # 0 in CLIP-normalised space
            with torch.no_grad():
                row.append(int(zero_shot(model, text_features, perturbed.reshape(1, 3, SIZE, SIZE)).argmax()) == label)
        hits.append(row)
    accuracy = np.mean(hits, axis=0)
    return accuracy, auc(LEVELS, 100 * accuracy)


def run(setup: dict, *flags: str) -> dict:
    return script.main([*flags, *setup["flags"]])


@pytest.mark.parametrize(
    "method, flags, options, expected_options",
    [
        ("ours", ["--steps", "3"], {"steps": 3}, {"start_layer": 1, "steps": 3}),
        ("rollout", ["--target", "--neg"], {}, {"start_layer": 0}),
    ],
)
def test_accuracies_equal_a_direct_computation(setup, monkeypatch, method, flags, options, expected_options):
    explained = []
    original_explain = tokenattr.protocols.explain
    monkeypatch.setattr(
        tokenattr.protocols,
        "explain",
        lambda model, inputs, *a, **k: (
            explained.append(inputs["input_ids"]) or original_explain(model, inputs, *a, **k)
        ),
    )
    out = setup["tmp"] / f"{method}.json"
    output = run(setup, "--method", method, *flags, "--out", str(out))
    target, positive = "--target" in flags, "--neg" not in flags
    accuracy, area = direct(setup, method, target, positive, **options)
    assert output["count"] == len(PERT_INDEX) and output["levels"] == pytest.approx(LEVELS)
    np.testing.assert_allclose(output["accuracy"], accuracy, atol=1e-12)
    np.testing.assert_allclose(output["accuracy_percent"], 100 * accuracy, atol=1e-9)
    assert output["auc_percent"] == pytest.approx(area, abs=1e-9)
    assert output["clean_accuracy"] == pytest.approx(4 / 6)  # the two mislabelled images are in the subset
    assert len(set(accuracy.tolist())) > 1  # the curve moves: the comparison could fail
    assert json.loads(out.read_text()) == output and not out.with_name(out.name + ".partial").exists()
    assert output["method_options"] == expected_options  # the defaults as used: CLIP's last block
    # The explained prompts: the label's with --target, else the best match on the clean image.
    labels = [label for _, label in setup["subset"]]
    assert torch.equal(torch.cat(explained), setup["input_ids"][labels if target else predictions(setup)])
    assert predictions(setup) != labels  # the two choices explain different prompts


def test_removed_pixels_become_the_mean_colour(setup, monkeypatch):
    model = setup["model"]
    seen = []
    original_features = model.image_features
    monkeypatch.setattr(
        model, "image_features", lambda pixel_values: seen.append(pixel_values) or original_features(pixel_values)
    )
    images01 = torch.stack([clip_image_to_tensor(load_rgb(path), SIZE) for path, _ in setup["subset"][:2]])
    labels = torch.tensor([label for _, label in setup["subset"][:2]])
    result = tokenattr.protocols.clip_perturbation_test(
        model,
        [(images01, labels)],
        "raw-attention",
        input_ids=setup["input_ids"],
        normalize=lambda x: normalize(x, model.config.image_mean, model.config.image_std),
        vis_class="target",
        progress=False,
    )
    assert result["method_options"] == {} and result["count"] == 2
    clean, *perturbed = seen
    std = torch.tensor(model.config.image_std).view(1, 3)
    mean = torch.tensor(CLIP_MEAN).view(1, 3)
    torch.testing.assert_close(clean * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1), images01)
    assert len(perturbed) == 10
    for fraction, pixel_values in zip(tokenattr.protocols.CLIP_PERTURBATION_FRACTIONS, perturbed):
        changed = (pixel_values != clean).any(dim=1)  # [B, H, W]
        assert changed.flatten(1).sum(dim=1).tolist() == [int(SIZE * SIZE * fraction)] * 2
        removed01 = pixel_values.permute(0, 2, 3, 1)[changed] * std + mean  # [removed, 3] in [0, 1] space
        torch.testing.assert_close(removed01, mean.expand_as(removed01))


def test_interrupted_run_resumes_to_the_same_file(setup, monkeypatch):
    out = setup["tmp"] / "resume.json"
    flags = ["--method", "attn_gradcam", "--out", str(out)]
    run(setup, *flags)
    reference = out.read_bytes()
    out.unlink()

    original_write = script.write_json

    def write_then_stop(path, data):
        original_write(path, data)
        raise KeyboardInterrupt

    monkeypatch.setattr(script, "write_json", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(setup, *flags)
    monkeypatch.setattr(script, "write_json", original_write)
    partial = out.with_name(out.name + ".partial")
    assert not out.exists() and json.loads(partial.read_text())["curve"]["count"] == 2
    with pytest.raises(ValueError, match="other settings: positive True vs False"):
        run(setup, *flags, "--neg")

    explained = []
    original_explain = tokenattr.protocols.explain
    monkeypatch.setattr(
        tokenattr.protocols, "explain", lambda *a, **k: explained.append(1) or original_explain(*a, **k)
    )
    run(setup, *flags)
    assert len(explained) == 2  # the 4 images left, in batches of 2
    assert out.read_bytes() == reference and not partial.exists()
    run(setup, *flags)  # finished: read back, nothing recomputed
    assert len(explained) == 2 and out.read_bytes() == reference


def test_clear_errors(setup, tmp_path, capsys):
    def parse_error(*flags: str) -> str:
        with pytest.raises(SystemExit):
            script.parse_args(list(flags))
        return capsys.readouterr().err

    flags = setup["flags"]
    assert "does not apply to CLIP; choose one of ours-h, ours-t" in parse_error("--method", "lrp", *flags)
    assert "unknown method 'gradient'" in parse_error("--method", "gradient", *flags)
    assert "--steps does not apply to rollout" in parse_error("--method", "rollout", "--steps", "3", *flags)
    missing = [*flags[:2], "--imagenet-path", str(tmp_path / "nowhere"), *flags[4:]]
    assert "nowhere is not a folder" in parse_error("--method", "ours", *missing)
    missing = [*flags[:4], "--pert-index", str(tmp_path / "none.npy"), *flags[6:]]
    assert "none.npy does not exist" in parse_error("--method", "ours", *missing)

    few_classes = tmp_path / "val"
    (few_classes / "n01440764").mkdir(parents=True)
    Image.new("RGB", (SIZE, SIZE)).save(few_classes / "n01440764" / "ILSVRC2012_val_00000001.png")
    np.save(tmp_path / "first.npy", np.array([0]))
    few = [*flags[:2], "--imagenet-path", str(few_classes), "--pert-index", str(tmp_path / "first.npy"), *flags[6:]]
    with pytest.raises(ValueError, match="has 1 class folders; expected the 1000 ImageNet classes"):
        script.main(["--method", "ours", *few])
    vit = tmp_path / "vit.pth"
    torch.save(ours_to_timm(random_vit().state_dict()), vit)
    with pytest.raises(ValueError, match="holds a vit model; expected CLIP"):
        script.main(["--method", "ours", "--checkpoint", str(vit), *flags[2:]])


def test_protocol_refuses_what_does_not_fit(setup):
    model = setup["model"]
    images01 = torch.rand(1, 3, SIZE, SIZE)
    common = dict(input_ids=setup["input_ids"], normalize=lambda x: x, progress=False)
    with pytest.raises(ValueError, match="does not apply to clip models"):
        tokenattr.protocols.clip_perturbation_test(model, [(images01, torch.tensor([0]))], "lrp", **common)
    with pytest.raises(ValueError, match="labels must index the 1000 prompts"):
        tokenattr.protocols.clip_perturbation_test(model, [(images01, torch.tensor([1000]))], "rollout", **common)
    with pytest.raises(ValueError, match="needs a CLIP model"):
        tokenattr.protocols.clip_perturbation_test(random_vit(), [], "rollout", **common)
    with pytest.raises(ValueError, match="got no batches"):
        tokenattr.protocols.clip_perturbation_test(model, [], "rollout", **common)


def test_script_writes_where_its_flags_say(setup, monkeypatch):
    monkeypatch.chdir(setup["tmp"])
    output = run(setup, "--method", "attn_last_layer", "--limit", "3")
    path = Path("results/clip_perturbation/raw-attention_predicted_positive.json")
    assert output["count"] == 3 and json.loads(path.read_text())["method"] == "raw-attention"
    assert output["command"].startswith("python CLIP/perturbation_eval.py --method attn_last_layer --limit 3")
