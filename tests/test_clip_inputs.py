"""CLIP's inputs: the image preprocess against the original's stored input, and the ImageNet class prompts."""

import fnmatch
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from tokenattr.data.imagenet import imagenet_class_names, zero_shot_prompts
from tokenattr.data.transforms import clip_image_to_tensor, normalize
from tokenattr.models.clip import CLIP_MEAN, CLIP_STD
from tokenattr.models.clip_tokenizer import load_clip_tokenizer, tokenize_prompts

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "clip" / "outputs.npz"


def test_chelsea_matches_the_original_input():
    """Exact: the reference ran the same PIL (13.0.0) bicubic resize and crop, uint8 / 255 in float32, and
    torchvision's ``(x - mean) / std`` in float32, which is what ``normalize`` computes, in the same order."""
    reference = np.load(REFERENCE)
    image = Image.fromarray(skimage.data.chelsea())
    assert image.size == (451, 300)
    image01 = clip_image_to_tensor(image)
    assert image01.shape == (3, 224, 224) and image01.dtype == torch.float32
    np.testing.assert_array_equal(image01.numpy(), reference["image01_cropped"])
    pixel_values = normalize(image01, CLIP_MEAN, CLIP_STD)[None]
    np.testing.assert_array_equal(pixel_values.numpy(), reference["input_normalized"])


def test_crop_geometry():
    # A portrait image whose short side is already 224 is not resampled; the crop's top is round(77 / 2) = 38
    # (round half to even, as torchvision's int(round(...))).
    rows = np.random.default_rng(0).integers(0, 256, size=(301, 224, 3), dtype=np.uint8)
    image01 = clip_image_to_tensor(Image.fromarray(rows))
    np.testing.assert_array_equal((image01 * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), rows[38:262])

    # A small landscape image: short side 50 → 224, long side int(224 · 115 / 50) = 515, left = round(291 / 2).
    wide = Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(50, 115, 3), dtype=np.uint8))
    expected = np.asarray(wide.resize((515, 224), Image.Resampling.BICUBIC))[:, 146:370]
    image01 = clip_image_to_tensor(wide)
    np.testing.assert_array_equal((image01 * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), expected)
    assert clip_image_to_tensor(wide, size=32).shape == (3, 32, 32)


def test_non_rgb_image_is_refused():
    with pytest.raises(ValueError, match="clip_image_to_tensor expects an RGB image, got mode 'L'"):
        clip_image_to_tensor(Image.new("L", (300, 300)))


def test_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert all(name and name == name.strip() for name in names)
    known = {0: "tench", 1: "goldfish", 2: "great white shark", 207: "Golden Retriever", 281: "tabby cat",
             291: "lion", 657: "missile", 744: "projectile", 817: "sports car", 836: "sunglass",
             837: "sunglasses", 999: "toilet paper"}  # fmt: skip
    assert {index: names[index] for index in known} == known

    verbatim = imagenet_class_names(distinct=False)  # CLIP's list as published
    assert [index for index in range(1000) if verbatim[index] != names[index]] == [744, 836]
    assert (verbatim[744], verbatim[836]) == ("missile", "sunglasses")
    assert len(set(verbatim)) == 998


def test_zero_shot_prompts_fit_the_context():
    prompts = zero_shot_prompts()
    assert prompts[0] == "a photo of a tench" and prompts[281] == "a photo of a tabby cat"
    assert zero_shot_prompts(["cat"], template="a photo of a {}.") == ["a photo of a cat."]
    assert zero_shot_prompts(["cat"], template="{} {{ }}") == ["cat {{ }}"]
    tokens = tokenize_prompts(load_clip_tokenizer(), prompts)  # raises if any prompt is longer than 77
    assert tokens.shape == (1000, 77)
    assert torch.unique(tokens, dim=0).shape[0] == 1000  # every class gets its own text
    assert tokens.argmax(dim=-1).max() < 20  # the longest prompt is well inside the context


@pytest.mark.parametrize("template", ["a photo of a", "{} and {}", "a photo of a {c}"])
def test_bad_template(template):
    with pytest.raises(ValueError, match="exactly one '{}'"):
        zero_shot_prompts(["cat"], template=template)


def test_assets_are_package_data():
    """Every shipped asset matches a package-data pattern, so wheels and `pip install` carry it."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tokenattr"]
    assets = ["bpe_simple_vocab_16e6.txt.gz", "imagenet_class_names.json", "LICENSE-open_clip.txt", "NOTICE.txt"]
    for name in assets:
        assert (ROOT / "tokenattr" / "assets" / name).is_file()
        assert any(fnmatch.fnmatch(f"assets/{name}", pattern) for pattern in patterns), name
