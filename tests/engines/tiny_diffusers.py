"""Tiny random-weight diffusers video pipelines, built offline and saved as an operator's weights would be.

The component sizes follow diffusers' own fast tests for these pipelines; the tokenizer and text encoder are
built in code (the upstream tests download a tiny T5), so nothing is fetched. Every build is seeded, so two
builds are byte-identical.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    LTXImageToVideoPipeline,
    LTXPipeline,
    LTXVideoTransformer3DModel,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import T5Config, T5EncoderModel, T5Tokenizer, UMT5Config, UMT5EncoderModel

TEXT_DIM = 32


def tiny_tokenizer(model_max_length: int) -> T5Tokenizer:
    """A T5 (Unigram) tokenizer from an in-code vocabulary: <pad>=0, </s>=1, <unk>=2, then pieces."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    pieces += [(c, -5.0) for c in letters] + [("\u2581" + c, -4.0) for c in letters]
    pieces += [("\u2581" + w, -1.0) for w in ("the", "fox", "snow", "red", "runs", "dawn", "through", "fresh")]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


def _t5_config(cls: type[T5Config], vocab_size: int) -> T5Config:
    return cls(vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
               relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
               feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def _wan_transformer(channels: int) -> WanTransformer3DModel:
    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=channels,
        out_channels=channels, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )


def _wan_components(vae: AutoencoderKLWan, channels: int) -> dict[str, object]:
    tokenizer = tiny_tokenizer(512)
    torch.manual_seed(0)
    return {
        "tokenizer": tokenizer,
        "text_encoder": UMT5EncoderModel(_t5_config(UMT5Config, len(tokenizer))).eval(),
        "vae": vae,
        # The real Wan repos ship UniPC with flow sigmas.
        "scheduler": UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        "transformer": _wan_transformer(channels),
        "transformer_2": None,
        "boundary_ratio": None,
    }


def build_wan_t2v(path: Path) -> Path:
    """Like Wan2.1-T2V-1.3B: 16 latent channels, spatial x8, temporal x4."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    WanPipeline(**_wan_components(vae, 16)).save_pretrained(path)  # type: ignore[arg-type]
    return path


def build_wan_i2v(path: Path) -> Path:
    """Like Wan2.2-TI2V-5B as an image-to-video pipeline: the image latent is the first latent frame."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
        latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True],
    )
    WanImageToVideoPipeline(**_wan_components(vae, 48), image_processor=None, image_encoder=None,  # type: ignore[arg-type]
                            expand_timesteps=True).save_pretrained(path)
    return path


def _ltx_components() -> dict[str, object]:
    tokenizer = tiny_tokenizer(128)
    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=1, caption_channels=TEXT_DIM,
    )
    torch.manual_seed(0)
    scaling = (True, True, True, False)  # spatial x32, temporal x8, as the real LTX-Video VAE
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=scaling,
        decoder_spatio_temporal_scaling=scaling, decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1), timestep_conditioning=False,
        patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    torch.manual_seed(0)
    text_encoder = T5EncoderModel(_t5_config(T5Config, len(tokenizer))).eval()
    return {"transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(),
            "text_encoder": text_encoder, "tokenizer": tokenizer}


def build_ltx_t2v(path: Path) -> Path:
    LTXPipeline(**_ltx_components()).save_pretrained(path)  # type: ignore[arg-type]
    return path


def build_ltx_i2v(path: Path) -> Path:
    LTXImageToVideoPipeline(**_ltx_components()).save_pretrained(path)  # type: ignore[arg-type]
    return path
