"""The ViT family beyond ViT-B (spec §6): ViT-L's layout, MAE fine-tuned classifiers, MoCo v3's linear classifier,
DeiT and DINO with its linear head — each loaded from its own checkpoint layout and compared with transformers —
and the ViT scripts' input normalisation. Every method on every family: test_families_methods.py."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from conftest import load_script, random_vit
from PIL import Image

import tokenattr
from tokenattr.data import normalize
from tokenattr.models import VisionTransformer, ViTConfig, load_dino, record
from tokenattr.models.vit import IMAGENET_MEAN, IMAGENET_STD, ORIGINAL_MEAN_STD, hf_to_timm, ours_to_timm, timm_to_hf

transformers = pytest.importorskip("transformers")

IMAGE, PATCH, CLASSES = 32, 8, 5
DINO_BACKBONE, DINO_LINEAR = "dino_vitbase16_like_pretrain.pth", "dino_vitbase16_like_linearweights.pth"


def spread(model):
    """Widen transformers' init so that attention and logits are not near-uniform."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return model.eval()


def assert_logits_close(ours, reference):
    # DESIGN §5.1: 1e-5 relative in float32; atol covers logits that are near zero.
    np.testing.assert_allclose(ours.detach().numpy(), reference.detach().numpy(), rtol=1e-5, atol=1e-5)


def hf_vit_with(timm_state, config) -> transformers.ViTForImageClassification:
    """transformers' ViT holding a timm-named backbone (plus whatever head fits), saved and read back as files."""
    return transformers.ViTForImageClassification.from_pretrained(
        None, config=config, state_dict=timm_to_hf(timm_state)
    )


def hf_vit_config(width, depth, heads, **overrides):
    settings = dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, intermediate_size=2 * width)
    settings.update(image_size=IMAGE, patch_size=PATCH, num_labels=CLASSES, layer_norm_eps=1e-6)
    return transformers.ViTConfig(**{**settings, **overrides})


# --- ViT-L/16 layout: heads of width 64, start layers scaled by depth ---------------------------------------


@pytest.fixture(scope="module")
def vit_l_like():
    """ViT-L's layout in small: head dimension 64 (2 heads of width 128), 4 blocks."""
    return spread(transformers.ViTForImageClassification(hf_vit_config(128, 4, 2)))


def test_vit_l_layout_from_a_hugging_face_folder(tmp_path, vit_l_like, tiny_images):
    vit_l_like.save_pretrained(tmp_path)
    ours = tokenattr.load_model(tmp_path)
    assert (ours.depth, ours.config.num_heads, ours.config.image_mean) == (4, 2, ORIGINAL_MEAN_STD)
    with torch.no_grad():
        assert_logits_close(ours(tiny_images), vit_l_like(pixel_values=tiny_images).logits)


def test_vit_l_layout_from_a_timm_file_reads_heads_as_width_over_64(tmp_path, vit_l_like, tiny_images):
    torch.save(hf_to_timm(vit_l_like.state_dict()), tmp_path / "jx_vit_large_like.pth")
    ours = tokenattr.load_model(tmp_path / "jx_vit_large_like.pth")
    assert (ours.config.num_heads, ours.pooling, ours.num_prefix_tokens) == (2, "cls", 1)
    with torch.no_grad():
        assert_logits_close(ours(tiny_images), vit_l_like(pixel_values=tiny_images).logits)


def test_start_layers_scale_with_depth():
    vit_l = VisionTransformer(ViTConfig(image_size=16, patch_size=8, embed_dim=8, depth=24, num_heads=1, mlp_dim=8))
    starts = {method: vit_l.method_defaults(method)["start_layer"] for method in ("ours-h", "ours-t", "rollout")}
    assert starts == {"ours-h": 6, "ours-t": 12, "rollout": 2}  # ViT-B's 3, 6, 1 at twice the depth


# --- MAE fine-tuned classifier: mean of patch tokens, then fc_norm ------------------------------------------


def test_mae_checkpoint_is_mean_pooled_with_imagenet_normalisation(tmp_path, tiny_images):
    timm_state = ours_to_timm(random_vit(embed_dim=128, num_heads=2, pooling="mean", seed=3).state_dict())
    assert "fc_norm.weight" in timm_state and "norm.weight" not in timm_state  # mae_finetuned_vit_base.pth
    torch.save({"model": timm_state, "epoch": 99}, tmp_path / "mae_finetuned_like.pth")
    ours = tokenattr.load_model(tmp_path / "mae_finetuned_like.pth")
    assert ours.pooling == "mean"
    assert (ours.config.image_mean, ours.config.image_std) == (IMAGENET_MEAN, IMAGENET_STD)

    # Independently: transformers' encoder on the same weights, then mean over patches -> LayerNorm -> Linear.
    backbone = {k: v for k, v in timm_state.items() if not k.startswith(("fc_norm.", "head."))}
    backbone.update({"norm.weight": torch.ones(128), "norm.bias": torch.zeros(128)})  # unused: the MAE has none
    backbone.update({"head.weight": torch.zeros(CLASSES, 128), "head.bias": torch.zeros(CLASSES)})
    hf = hf_vit_with(backbone, hf_vit_config(128, 2, 2, intermediate_size=256))
    with torch.no_grad():
        encoded = hf.vit(pixel_values=tiny_images, output_hidden_states=True).hidden_states[-1]  # before layernorm
        pooled = encoded[:, 1:].mean(dim=1)
        pooled = torch.nn.functional.layer_norm(
            pooled, (128,), timm_state["fc_norm.weight"], timm_state["fc_norm.bias"], eps=1e-6
        )
        expected = pooled @ timm_state["head.weight"].T + timm_state["head.bias"]
        assert_logits_close(ours(tiny_images), expected)


# --- MoCo v3 linear classifier: timm keys behind "module.", a fixed sine-cosine position embedding -------------


def moco_v3_position_embedding(grid: int, dim: int) -> np.ndarray:
    """MoCo v3's ``build_2d_sincos_position_embedding`` written out per entry: a zero class-token row, then for the
    patch at (row i, column j) ``[sin(i ω_k), cos(i ω_k), sin(j ω_k), cos(j ω_k)]``, ``ω_k = 10000^(-4k/dim)``."""
    quarter = dim // 4
    table = np.zeros((1 + grid * grid, dim))
    for i in range(grid):
        for j in range(grid):
            for k in range(quarter):
                omega = 10000.0 ** (-k / quarter)
                row = table[1 + i * grid + j]
                row[k], row[quarter + k] = np.sin(i * omega), np.cos(i * omega)
                row[2 * quarter + k], row[3 * quarter + k] = np.sin(j * omega), np.cos(j * omega)
    return table[None].astype(np.float32)


def test_moco_v3_linear_checkpoint_loads_with_imagenet_normalisation(tmp_path, tiny_images):
    timm_state = ours_to_timm(random_vit(embed_dim=128, num_heads=2, seed=6).state_dict())
    timm_state["pos_embed"] = torch.from_numpy(moco_v3_position_embedding(IMAGE // PATCH, 128))
    # main_lin.py's save_checkpoint: the DistributedDataParallel state dict beside the training state
    checkpoint = {
        "epoch": 90,
        "arch": "vit_base",
        "state_dict": {f"module.{name}": value for name, value in timm_state.items()},
        "best_acc1": 76.7,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]},
    }
    torch.save(checkpoint, tmp_path / "linear-vit-b-300ep.pth.tar")
    ours = tokenattr.load_model(tmp_path / "linear-vit-b-300ep.pth.tar")
    assert (ours.pooling, ours.config.num_heads) == ("cls", 2)
    assert (ours.config.image_mean, ours.config.image_std) == (IMAGENET_MEAN, IMAGENET_STD)  # MoCo v3 trains so
    hf = hf_vit_with(timm_state, hf_vit_config(128, 2, 2, intermediate_size=256))
    with torch.no_grad():
        assert_logits_close(ours(tiny_images), hf(pixel_values=tiny_images).logits)

    # the same weights with a trained (perturbed) position embedding are a JAX-style ViT: 0.5/0.5
    timm_state["pos_embed"] = timm_state["pos_embed"] + 1e-3
    assert tokenattr.load_model(timm_state, num_heads=2).config.image_mean == ORIGINAL_MEAN_STD


def test_vit_scripts_normalise_with_the_models_statistics_or_the_originals(tmp_path):
    """``--normalisation model`` (default) uses MAE's ImageNet mean/std, ``original`` the original's 0.5/0.5; stage 2
    of the perturbation test classifies with what stage 1 used."""
    generation, stage2 = load_script("generate_visualizations"), load_script("perturbation_eval_from_hdf5")
    checkpoint = tmp_path / "mae_finetuned_like.pth"
    torch.save({"model": ours_to_timm(random_vit(pooling="mean", seed=2).state_dict())}, checkpoint)
    root = tmp_path / "val"
    pixels = np.random.default_rng(0).integers(0, 256, (2, IMAGE, IMAGE, 3), dtype=np.uint8)
    for index, wnid in enumerate(("n01440764", "n01443537")):
        (root / wnid).mkdir(parents=True)
        Image.fromarray(pixels[index]).save(root / wnid / "ILSVRC2012_val_00000001.JPEG")
    flags = ["--method", "raw-attention", "--checkpoint", str(checkpoint), "--imagenet-validation-path", str(root)]
    flags += ["--num-heads", "4", "--num-workers", "0"]
    model = tokenattr.load_model(checkpoint, num_heads=4)
    for choice, (mean, std) in (
        ("model", (IMAGENET_MEAN, IMAGENET_STD)),
        ("original", (ORIGINAL_MEAN_STD, ORIGINAL_MEAN_STD)),
    ):
        extra = [] if choice == "model" else ["--normalisation", choice]
        path = generation.main([*flags, *extra, "--out", str(tmp_path / choice)])
        with h5py.File(path, "r") as results:
            assert json.loads(results.attrs["fingerprint_image_mean"]) == list(mean)
            images01, maps = torch.from_numpy(results["image"][()]), results["vis"][:, 0]
        relevance = tokenattr.explain(model, normalize(images01, mean, std), "raw-attention")
        np.testing.assert_allclose(maps, tokenattr.to_image_map(relevance, (IMAGE, IMAGE)).numpy(), atol=1e-6)
        stage2_flags = ["--method", "raw-attention", "--checkpoint", str(checkpoint), "--num-heads", "4"]
        scores = stage2.main([*stage2_flags, "--visualizations", str(tmp_path / choice), "--out", str(tmp_path)])
        assert (scores["settings"]["image_mean"], scores["settings"]["image_std"]) == (list(mean), list(std))
    with pytest.raises(SystemExit):
        generation.parse_args([*flags, "--normalisation", "imagenet"])  # the choices are model and original


# --- DeiT: class and distillation tokens, two heads averaged ------------------------------------------------


def hf_deit(with_teacher: bool = True):
    config = transformers.DeiTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=IMAGE,
        patch_size=PATCH,
        num_labels=CLASSES,
    )
    cls = (
        transformers.DeiTForImageClassificationWithTeacher if with_teacher else transformers.DeiTForImageClassification
    )
    return spread(cls(config))


@pytest.fixture(scope="module")
def deit_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deit")
    hf = hf_deit()
    hf.save_pretrained(folder)
    return folder, hf


def test_deit_folder_loads_with_the_same_logits(deit_folder, tiny_images):
    folder, hf = deit_folder
    ours = tokenattr.load_model(folder)
    assert (ours.num_prefix_tokens, ours.pooling, ours.config.image_mean) == (2, "cls+dist", IMAGENET_MEAN)
    with torch.no_grad():
        assert_logits_close(ours(tiny_images), hf(pixel_values=tiny_images).logits)


def test_timm_named_deit_is_detected_from_its_keys(deit_folder, tiny_images):
    _, hf = deit_folder
    timm_state = hf_to_timm(hf.state_dict())
    assert {"dist_token", "head_dist.weight"} <= set(timm_state)  # timm's deit_*_distilled names
    ours = tokenattr.load_model(timm_state, num_heads=4)
    with torch.no_grad():
        assert_logits_close(ours(tiny_images), hf(pixel_values=tiny_images).logits)


def test_deit_without_teacher_head_reads_the_class_token(tmp_path, tiny_images):
    hf = hf_deit(with_teacher=False)
    hf.save_pretrained(tmp_path)
    ours = tokenattr.load_model(tmp_path)
    assert (ours.num_prefix_tokens, ours.pooling) == (2, "cls")
    with torch.no_grad():
        assert_logits_close(ours(tiny_images), hf(pixel_values=tiny_images).logits)


# --- DINO ViT-B/16 with its linear head: [CLS ‖ mean(patches)] of the normalised output -----------------------


@pytest.fixture(scope="module")
def dino_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dino")
    backbone = ours_to_timm(random_vit(embed_dim=128, num_heads=2, seed=4).state_dict())
    backbone = {k: v for k, v in backbone.items() if not k.startswith("head.")}  # DINO backbones have no head
    generator = torch.Generator().manual_seed(5)
    linear = {
        name: torch.randn(shape, generator=generator) * 0.1
        for name, shape in (("weight", (CLASSES, 256)), ("bias", (CLASSES,)))
    }
    torch.save(backbone, folder / DINO_BACKBONE)
    torch.save(
        {"epoch": 100, "state_dict": {f"module.linear.{k}": v for k, v in linear.items()}, "best_acc": 78.2},
        folder / DINO_LINEAR,
    )
    return folder, backbone, linear


def test_dino_with_its_linear_head_concatenates_class_and_mean_patch_features(dino_files, tiny_images):
    folder, backbone, linear = dino_files
    ours = load_dino(folder / DINO_BACKBONE, folder / DINO_LINEAR)
    assert (ours.pooling, ours.config.num_heads, ours.config.image_std) == ("cls+mean", 2, IMAGENET_STD)

    dummy_head = {"head.weight": torch.zeros(CLASSES, 128), "head.bias": torch.zeros(CLASSES)}
    hf = hf_vit_with({**backbone, **dummy_head}, hf_vit_config(128, 2, 2, intermediate_size=256))
    with torch.no_grad():
        normed = hf.vit(pixel_values=tiny_images).last_hidden_state  # after the final layernorm
        features = torch.cat([normed[:, 0], normed[:, 1:].mean(dim=1)], dim=-1)  # eval_linear.py, ViT-B/16
        expected = features @ linear["weight"].T + linear["bias"]
        assert_logits_close(ours(tiny_images), expected)


def test_dino_head_of_another_width_is_refused(dino_files):
    folder, backbone, _ = dino_files
    linear = {"linear.weight": torch.zeros(CLASSES, 5 * 128), "linear.bias": torch.zeros(CLASSES)}  # n_last_blocks=4
    with pytest.raises(ValueError, match="n_last_blocks=1"):
        load_dino(backbone, linear)


# --- methods read off the rows the prediction is made from (every method on every family: test_families_methods) ---


@pytest.fixture(scope="module")
def family_models(deit_folder, dino_files):
    folder, _, _ = dino_files
    return {
        "deit": tokenattr.load_model(deit_folder[0]),
        "dino": load_dino(folder / DINO_BACKBONE, folder / DINO_LINEAR),
    }


@pytest.mark.parametrize(
    "kind, rows",
    [
        ("deit", lambda attn: attn[:, :2].mean(dim=1)),  # CLS and distillation rows, as the two heads are averaged
        ("dino", lambda attn: attn[:, 0] + attn[:, 1:].mean(dim=1)),  # spec §3.4 dino=True
    ],
)
def test_raw_attention_is_read_at_the_pooled_rows(kind, rows, family_models, tiny_images):
    model = family_models[kind]
    last = model.depth - 1
    with torch.no_grad(), record(model, [last]) as records:
        model(tiny_images)
    attn = records[last].attn_probs.mean(dim=1)  # [B, N, N]
    expected = rows(attn)[:, model.num_prefix_tokens :].clamp(min=0)
    torch.testing.assert_close(tokenattr.explain(model, tiny_images, "raw-attention"), expected)


def test_deit_relprop_gives_each_head_half_of_the_logit_relevance(deit_folder, tiny_images):
    """LRP is linear in the seeded relevance: with a zero distillation head, a DeiT's attention relevance is half
    that of the same network with the class-token head alone."""
    deit = tokenattr.load_model(deit_folder[0])
    with torch.no_grad():
        deit.head_dist.weight.zero_()
    class_head_only = VisionTransformer(ViTConfig(**{**vars(deit.config), "pooling": "cls"}))
    class_head_only.load_state_dict({k: v for k, v in deit.state_dict().items() if not k.startswith("head_dist.")})
    seed = torch.zeros(len(tiny_images), CLASSES)
    seed[:, 1] = 1.0
    relevances = []
    for model in (deit, class_head_only.eval()):
        with torch.no_grad(), record(model, list(range(model.depth))) as records:
            model(tiny_images)
        relevances.append(model.relprop({"pixel_values": tiny_images}, records, seed)[1])
    for halved, full in zip(*relevances):
        torch.testing.assert_close(halved, full / 2)


def test_unsupported_hugging_face_model_lists_the_supported_types(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "swin"}')
    with pytest.raises(ValueError, match=r"unsupported Hugging Face model_type 'swin'.*deit.*vit"):
        tokenattr.load_model(tmp_path)
