"""Tiny random-weight checkpoints built from the real classes, in the real hub layouts.

Tests and the offline demo (`app.py --tiny`) use these instead of downloads. Each checkpoint is
built once per (builder version, seed) into a cache folder and then loaded through exactly the
same `from_pretrained` path as real weights. The layouts copy the hub repos on purpose:

* Z-Image (`Tongyi-MAI/Z-Image-Turbo`): `model_index.json` naming `Qwen3Model` as the text
  encoder; `transformer/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`; the transformer and
  text encoder saved as sharded safetensors with an index; `vocab.json` + `merges.txt` beside
  `tokenizer.json`.
* Qwen3-VL (`Qwen/Qwen3-VL-4B-Instruct`): one folder with the model, tokenizer,
  `preprocessor_config.json`, `video_preprocessor_config.json` and `chat_template.json`.

Images made with these models are noise; only the mechanics are real.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

BUILDER_VERSION = 2  # 2: the VAE tiles at 1024 px (sample_size), as the real one does
HIDDEN = 64  # text hidden size == DiT caption width (cap_feat_dim), as 2560 is for the real pair
TEXT_LAYERS = 8  # enough that hidden_states[-6] (the VL default layer) exists
# Sizes: "tiny" for tests and the offline demo; "medium" for benchmarks whose compute dominates on
# a CPU. text = Qwen3 (and the VL text model), dit = ZImageTransformer2DModel.
SHARD = {"tiny": "200KB", "medium": "50MB", "full": "5GB"}  # sharded like the hub repos, in a few files
SIZES = {
    "tiny": {"text": dict(hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=TEXT_LAYERS,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16),
             "dit": dict(dim=64, n_layers=2, n_refiner_layers=2, n_heads=2, n_kv_heads=2, axes_dims=[8, 12, 12]),
             "vision": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2)},
    "medium": {"text": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                            num_attention_heads=8, num_key_value_heads=4, head_dim=64),
               "dit": dict(dim=512, n_layers=6, n_refiner_layers=2, n_heads=4, n_kv_heads=4, axes_dims=[32, 48, 48]),
               "vision": dict(depth=4, hidden_size=256, intermediate_size=1024, num_heads=4)},
    # The released architecture (random weights: speed does not depend on their values). GPU only.
    "full": {"text": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128),
             "dit": dict(dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30, n_kv_heads=30, axes_dims=[32, 48, 48]),
             "vision": dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                            num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17])},
}
REAL_VOCAB = 151936  # Qwen3 / Qwen3-VL vocabulary (the builders use their small trained tokenizer)

# Qwen's special tokens, in the order (and so with the relative ids) of the real vocabulary.
SPECIAL_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", True), ("<|fim_middle|>", True),
    ("<|fim_suffix|>", True), ("<|fim_pad|>", True), ("<|repo_name|>", True),
    ("<|file_sep|>", True), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
]

# A Qwen3-style chat template: system/user/assistant turns, and `enable_thinking=False` adds an
# empty think block after the generation prompt (as the real template does).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# Qwen3-VL-style template: content may be a string or a list of {"type": "image"|"text"} parts.
VL_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_CORPUS_WORDS = (
    "a the of and in on with at by from photo painting portrait landscape city street night "
    "morning light shadow colour color red blue green yellow orange purple black white grey "
    "gold silver cat dog bird horse fox owl tree forest river lake mountain sea ocean sky cloud "
    "sun moon star rain snow fog woman man child old young smiling standing sitting walking "
    "wearing dress coat hat glasses detailed cinematic soft warm cold bright dark vivid style "
    "oil watercolor ink sketch pencil anime illustration poster typography neon vintage film "
    "camera lens bokeh close-up wide angle studio render 3d isometric minimal flat texture "
    "wooden stone glass metal paper fabric a1 2 3 4 5 6 7 8 9 0 , . : ; ! ? \" ' ( ) - _ / "
    "<think> </think> user assistant system"
).split()


def _train_tokenizer(seed: int):
    """A byte-level BPE trained in milliseconds, wrapped as the real `Qwen2Tokenizer`."""
    import random

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    rng = random.Random(seed)
    lines = [" ".join(rng.choices(_CORPUS_WORDS, k=24)) for _ in range(400)]
    lines += ["\n\n".join(lines[i : i + 3]) for i in range(0, 60, 3)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(lines, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
    tokenizer.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in SPECIAL_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer, model["vocab"], merges


def _save_tokenizer(tokenizer, vocab: dict, merges: list[tuple], folder: Path) -> None:
    tokenizer.save_pretrained(folder)
    # The hub repos ship the slow files beside tokenizer.json; keep that layout.
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def _vae_config(size: str) -> dict:
    shape = ({"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32}
             if size == "full" else {"block_out_channels": [8, 16, 16, 16], "layers_per_block": 1,
                                     "norm_num_groups": 8})
    return dict(in_channels=3, out_channels=3, latent_channels=16, **shape, sample_size=1024,
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)


def _text_config(size: str, vocab_size: int, **extra):
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=vocab_size, **SIZES[size]["text"], max_position_embeddings=8192,
                       tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
                       bos_token_id=None, **extra)


def _vl_config(size: str, vocab_size: int, hidden: int | None = None, **token_ids):
    from transformers import Qwen3VLConfig

    vision = {"num_position_embeddings": 64, "deepstack_visual_indexes": [0, 1], **SIZES[size]["vision"]}
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size, **{**SIZES[size]["text"], **({"hidden_size": hidden} if hidden else {})},
            max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                             "mrope_section": [24, 20, 20] if size == "full" else [2, 3, 3],
                             "mrope_interleaved": True},
        ),
        vision_config=dict(**vision, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           out_hidden_size=hidden or SIZES[size]["text"]["hidden_size"]),
        tie_word_embeddings=True, **token_ids,
    )


def write_metadata_only(folder: Path, size: str = "full", vocab_size: int = REAL_VOCAB) -> tuple[Path, Path]:
    """Configs and safetensors indexes, no weights: what the memory planner reads, in seconds.

    The models are built on the meta device, so even `full` (the released architecture with the
    real vocabulary: the real checkpoints' sizes) costs no memory. The VAE gets only its config,
    which the planner sizes on the meta device. Returns (Z-Image folder, Qwen3-VL folder).
    """
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, ZImageTransformer2DModel
    from transformers import Qwen3Model, Qwen3VLForConditionalGeneration

    def index(model, target: Path, name: str) -> None:
        if hasattr(model, "tie_weights"):
            model.tie_weights()  # the saved checkpoints store tied weights once
        params = list(model.parameters())
        meta = {"total_parameters": sum(p.numel() for p in params),
                "total_size": sum(p.numel() * p.element_size() for p in params)}
        weight_map = {k: "model-00001-of-00002.safetensors" for k in model.state_dict()}
        target.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(json.dumps({"metadata": meta, "weight_map": weight_map}))

    zimage, vl = Path(folder) / "zimage", Path(folder) / "qwen3vl"
    with init_empty_weights():
        text = Qwen3Model(_text_config(size, vocab_size, dtype="bfloat16")).to(torch.bfloat16)
        dit = ZImageTransformer2DModel(**SIZES[size]["dit"], cap_feat_dim=SIZES[size]["text"]["hidden_size"],
                                       axes_lens=[1536, 512, 512]).to(torch.bfloat16)
        vl_model = Qwen3VLForConditionalGeneration(_vl_config(size, vocab_size)).to(torch.bfloat16)
        vae = AutoencoderKL(**_vae_config(size))
    index(text, zimage / "text_encoder", "model.safetensors.index.json")
    text.config.save_pretrained(zimage / "text_encoder")
    index(dit, zimage / "transformer", "diffusion_pytorch_model.safetensors.index.json")
    dit.save_config(zimage / "transformer")
    vae.save_config(zimage / "vae")
    index(vl_model, vl, "model.safetensors.index.json")
    vl_model.config.save_pretrained(vl)
    return zimage, vl


def _build_zimage(folder: Path, seed: int, size: str = "tiny") -> None:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel
    from transformers import Qwen3Model

    tokenizer, vocab, merges = _train_tokenizer(seed)
    torch.manual_seed(seed)
    config = SIZES[size]
    text_encoder = Qwen3Model(_text_config(size, len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                           eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>")))
    transformer = ZImageTransformer2DModel(
        **config["dit"], cap_feat_dim=config["text"]["hidden_size"],
        axes_lens=[320, 128, 128],  # caption limit 288 (real: 1504)
    )
    vae = AutoencoderKL(**_vae_config(size))
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False
    )
    if size == "full":  # stored in bfloat16, as the released checkpoints are (half the disk)
        transformer.to(torch.bfloat16), text_encoder.to(torch.bfloat16)
    transformer.save_pretrained(folder / "transformer", max_shard_size=SHARD[size])
    text_encoder.save_pretrained(folder / "text_encoder", max_shard_size=SHARD[size])
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    _save_tokenizer(tokenizer, vocab, merges, folder / "tokenizer")
    model_index = {
        "_class_name": "ZImagePipeline",
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3Model"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "ZImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2))


def _build_qwen3_vl(folder: Path, seed: int, size: str = "tiny", hidden: int | None = None) -> None:
    from transformers import Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer, vocab, merges = _train_tokenizer(seed)
    ids = tokenizer.convert_tokens_to_ids
    torch.manual_seed(seed + 1)
    config = _vl_config(size, len(tokenizer), hidden,
                        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    model = Qwen3VLForConditionalGeneration(config)
    if size == "full":
        model.to(torch.bfloat16)
    model.save_pretrained(folder, max_shard_size=SHARD[size])
    tokenizer.chat_template = None  # the VL repo keeps its template in chat_template.json
    _save_tokenizer(tokenizer, vocab, merges, folder)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16, temporal_patch_size=2, merge_size=2,
        size={"shortest_edge": 64 * 64, "longest_edge": 512 * 512},
    )
    image_processor.save_pretrained(folder)
    config_path = folder / "preprocessor_config.json"
    pre = json.loads(config_path.read_text())
    pre["image_processor_type"] = "Qwen2VLImageProcessor"
    pre["processor_class"] = "Qwen3VLProcessor"
    config_path.write_text(json.dumps(pre, indent=2))
    video = {
        "video_processor_type": "Qwen3VLVideoProcessor", "patch_size": 16,
        "temporal_patch_size": 2, "merge_size": 2,
        "size": {"shortest_edge": 64 * 64, "longest_edge": 512 * 512},
        "processor_class": "Qwen3VLProcessor",
    }
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": VL_CHAT_TEMPLATE}))


def _build_clip(folder: Path, seed: int, size: str = "tiny") -> None:
    """A tiny CLIP (`openai/clip-vit-base-patch32` layout): model, BPE tokenizer, image processor."""
    import string

    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(seed)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,-'":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    merges = []
    for word in ("the", "and", "fox", "red", "sea", "sky", "town", "snow", "in"):  # a few real merges
        for i in range(1, len(word)):
            pair = (word[:i], word[i])
            if pair not in merges:
                merges.append(pair)
                vocab.setdefault(word[: i + 1], len(vocab))
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=merges).save_pretrained(folder)
    processor = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 32},
                 "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "do_rescale": True,
                 "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True, "resample": 3,
                 "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))


def default_cache_dir() -> Path:
    """~/.cache/llm_dit (or under $XDG_CACHE_HOME); `--cache-dir` overrides it."""
    return Path(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))) / "llm_dit"


def _ensure(name: str, builder, seed: int, cache_dir: Path | None, size: str = "tiny") -> Path:
    if size not in SIZES:
        raise ValueError(f"size={size!r} is unknown: use one of {', '.join(SIZES)}.")
    label = name if size == "tiny" else f"{name}-{size}"
    target = Path(cache_dir or default_cache_dir()) / f"tiny-{label}-v{BUILDER_VERSION}-seed{seed}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        builder(staging, seed, size)
        (staging / ".complete").write_text("ok\n")
        try:
            staging.rename(target)  # atomic: a parallel builder either wins or finds it done
        except OSError:
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_tiny_zimage(seed: int = 0, cache_dir: Path | None = None, size: str = "tiny") -> Path:
    """Folder of a tiny Z-Image checkpoint in the hub repo's layout (built on first use)."""
    return _ensure("zimage", _build_zimage, seed, cache_dir, size)


def ensure_tiny_qwen3_vl(seed: int = 0, cache_dir: Path | None = None, size: str = "tiny") -> Path:
    """Folder of a tiny Qwen3-VL checkpoint in the hub repo's layout (built on first use)."""
    return _ensure("qwen3vl", _build_qwen3_vl, seed, cache_dir, size)


def _build_inpaint_controlnet(folder: Path, seed: int, size: str = "tiny") -> None:
    _build_controlnet(folder, seed, size, control_in_dim=33)


def _build_controlnet(folder: Path, seed: int, size: str = "tiny", control_in_dim: int = 16) -> None:
    """A tiny `ZImageControlNetModel` for the tiny DiT (union layout: control blocks on every DiT
    layer plus a control noise refiner). Its projections are random, not zero as at the start
    of training, so the control image visibly steers the tiny model."""
    from diffusers import ZImageControlNetModel

    torch.manual_seed(seed + 2)
    dit = SIZES[size]["dit"]
    model = ZImageControlNetModel(
        control_layers_places=list(range(dit["n_layers"])), control_refiner_layers_places=[0, 1],
        control_in_dim=control_in_dim, add_control_noise_refiner="control_noise_refiner", dim=dit["dim"],
        n_refiner_layers=dit["n_refiner_layers"], n_heads=dit["n_heads"], n_kv_heads=dit["n_kv_heads"])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "_proj." in name:
                param.normal_(0.0, 0.2)
    model.save_pretrained(folder)


def ensure_tiny_controlnet(seed: int = 0, cache_dir: Path | None = None, inpaint: bool = False) -> Path:
    """Folder of a tiny Z-Image ControlNet in diffusers' layout (built on first use); `inpaint`:
    union 2.0's layout, whose control input is the map, the mask and the masked image (33 channels)."""
    if inpaint:
        return _ensure("controlnet-inpaint", _build_inpaint_controlnet, seed, cache_dir)
    return _ensure("controlnet", _build_controlnet, seed, cache_dir)


def ensure_tiny_clip(seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Folder of a tiny CLIP in the hub layout, for `--metrics-model` (built on first use)."""
    return _ensure("clip", _build_clip, seed, cache_dir)


# The official/ComfyUI single-file key layout of the Z-Image DiT, from diffusers' names: the inverse
# of diffusers' `convert_z_image_transformer_checkpoint_to_diffusers` (fused qkv, `out`, q/k_norm).
_ORIGINAL_NAMES = {"all_final_layer.2-1.": "final_layer.", "all_x_embedder.2-1.": "x_embedder.",
                   ".attention.to_out.0.": ".attention.out.", ".attention.norm_q.": ".attention.q_norm.",
                   ".attention.norm_k.": ".attention.k_norm."}


def original_layout(state_dict: dict) -> dict:
    """A diffusers Z-Image DiT state dict in the layout single files ship (`model.diffusion_model.`)."""
    out = {}
    for key, value in state_dict.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            fused = torch.cat([value, state_dict[key.replace(".to_q.", ".to_k.")],
                               state_dict[key.replace(".to_q.", ".to_v.")]])
            out["model.diffusion_model." + key.replace(".to_q.", ".qkv.")] = fused
            continue
        for ours, theirs in _ORIGINAL_NAMES.items():
            key = key.replace(ours, theirs)
        out["model.diffusion_model." + key] = value.contiguous()
    return out


def write_single_file(transformer_folder: Path, path: Path, dtype=None) -> Path:
    """The DiT of `transformer_folder` as one .safetensors in the original layout (in `dtype`)."""
    from diffusers import ZImageTransformer2DModel
    from safetensors.torch import save_file

    state = ZImageTransformer2DModel.from_pretrained(transformer_folder).state_dict()
    save_file({k: v.to(dtype) if dtype else v for k, v in original_layout(state).items()}, str(path))
    return path


def write_gguf(transformer_folder: Path, path: Path, quant: str = "Q8_0") -> Path:
    """The DiT of `transformer_folder` as a GGUF file in the original layout, as the community's
    Z-Image GGUFs are: linear weights quantized (`quant`), norms, biases and pad tokens in F32."""
    import gguf
    from diffusers import ZImageTransformer2DModel

    kind = gguf.GGMLQuantizationType[quant]
    block = gguf.GGML_QUANT_SIZES[kind][0]
    state = original_layout(ZImageTransformer2DModel.from_pretrained(transformer_folder).state_dict())
    writer = gguf.GGUFWriter(str(path), arch="lumina2")
    for key, value in state.items():
        array = value.float().numpy()
        if key.endswith(".weight") and array.ndim == 2 and array.shape[-1] % block == 0:
            packed = gguf.quants.quantize(array, kind)
            writer.add_tensor(key, packed, raw_shape=packed.shape, raw_dtype=kind)
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
