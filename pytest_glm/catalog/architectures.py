"""The real ``config.json`` of every registered GLM-4.x model, and the GLM special tokens' ids in each
vocabulary: what a shape run (``--glm-weights dummy``) serves with random weights.

Values are the fact sheet's (glm-facts §2.1), each model with the source of its numbers. Where a value is
inferred rather than read from the model's own file, the entry says so. No pytest import: pure data.
"""

from __future__ import annotations

from typing import Any

#: Keys every GLM-4.x MoE config carries with the same value.
_COMMON: dict[str, Any] = {
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "n_shared_experts": 1,
    "n_group": 1,
    "topk_group": 1,
    "norm_topk_prob": True,
    "num_nextn_predict_layers": 1,
    "rope_theta": 1000000.0,
    "rope_scaling": None,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "use_cache": True,
    "torch_dtype": "bfloat16",
    "bos_token_id": None,
}

#: GLM-4.5 / 4.5-Air / 4.6 / 4.7 vocabulary (151552): eos is <|endoftext|>, <|user|>, <|observation|>.
GLM45_EOS = [151329, 151336, 151338]
#: GLM-4.7-Flash vocabulary (154880): the same three tokens, each 3491 higher.
FLASH_EOS = [154820, 154827, 154829]


def _glm4_moe(hidden: int, layers: int, experts: int, first_dense: int, moe_inter: int, inter: int,
              scaling: float, qk_norm: bool, context: int) -> dict[str, Any]:
    return {
        "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", **_COMMON,
        "vocab_size": 151552, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": 96, "num_key_value_heads": 8, "head_dim": 128, "partial_rotary_factor": 0.5,
        "attention_bias": True, "use_qk_norm": qk_norm, "n_routed_experts": experts, "num_experts_per_tok": 8,
        "first_k_dense_replace": first_dense, "moe_intermediate_size": moe_inter, "intermediate_size": inter,
        "routed_scaling_factor": scaling, "max_position_embeddings": context,
        "eos_token_id": GLM45_EOS, "pad_token_id": 151329,
    }


#: One entry per model (BF16 and FP8 share it; FP8 adds a quantization_config, see quantization_config()).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # NVIDIA Megatron-Bridge docs (glm-facts S16) for the sizes; head_dim, partial_rotary_factor,
    # rope_theta, attention_bias and eos/pad inferred equal to GLM-4.7's (same glm4_moe bridge, same shape).
    "zai-org/GLM-4.5": _glm4_moe(5120, 92, 160, 3, 1536, 12288, 2.5, True, 131072),
    # PrimeIntellect/INTELLECT-3-Base config.json (GLM-4.5-Air-Base lineage, S12c); transformers'
    # Glm4MoeConfig defaults agree. No QK norm, one dense layer, 128 experts, scaling 1.0.
    "zai-org/GLM-4.5-Air": _glm4_moe(4096, 46, 128, 1, 1408, 10944, 1.0, False, 131072),
    # RedHatAI/GLM-4.6-NVFP4 config.json (S12b), which keeps every architecture field; use_qk_norm and
    # routed_scaling_factor inferred equal to GLM-4.5's.
    "zai-org/GLM-4.6": _glm4_moe(5120, 92, 160, 3, 1536, 12288, 2.5, True, 202752),
    # zai-org/GLM-4.7 config.json itself (HF page, refs/pr/49, S12a).
    "zai-org/GLM-4.7": _glm4_moe(5120, 92, 160, 3, 1536, 12288, 2.5, True, 202752),
    # naaviii/glm-code-next-4b config.json, an unmodified copy of the original (S12d); Intel's re-saved copy
    # and transformers' Glm4MoeLiteConfig defaults agree. MLA attention; vLLM reads first_k_dense_replace.
    "zai-org/GLM-4.7-Flash": {
        "architectures": ["Glm4MoeLiteForCausalLM"], "model_type": "glm4_moe_lite", **_COMMON,
        "vocab_size": 154880, "hidden_size": 2048, "num_hidden_layers": 47,
        "num_attention_heads": 20, "num_key_value_heads": 20, "partial_rotary_factor": 1.0,
        "attention_bias": False, "q_lora_rank": 768, "kv_lora_rank": 512, "qk_nope_head_dim": 192,
        "qk_rope_head_dim": 64, "v_head_dim": 256, "rope_interleave": True,
        "n_routed_experts": 64, "num_experts_per_tok": 4, "first_k_dense_replace": 1,
        "moe_intermediate_size": 1536, "intermediate_size": 10240, "routed_scaling_factor": 1.8,
        "topk_method": "noaux_tc", "scoring_func": "sigmoid", "max_position_embeddings": 202752,
        "eos_token_id": FLASH_EOS, "pad_token_id": 154820,
    },
}

#: FP8 as compressed-tensors: weights FP8-E4M3 per output channel (static scales), input activations FP8
#: per token (dynamic); lm_head and the MoE router gates stay in BF16.
#:
#: Why this scheme for every FP8 model: the zai-org FP8 checkpoints go through vLLM's compressed-tensors
#: path with per-channel scales (glm-facts §2.3, from HabanaAI's vLLM PRs; their exact quantization_config
#: JSON could not be read, so the ignore list is not confirmed). A block-128 fp8 config
#: ("weight_block_size": [128, 128]) is not an option anyway: GLM-4.5-Air's dense intermediate_size 10944
#: is not divisible by 128 and vLLM refuses it (measured on an H200, shared/shape-runs.md), while this
#: per-channel config served GLM-4.5-Air-FP8 there.
FP8_PER_CHANNEL: dict[str, Any] = {
    "quant_method": "compressed-tensors",
    "format": "float-quantized",
    "quantization_status": "compressed",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "dynamic": False,
                        "symmetric": True, "group_size": None, "block_structure": None, "actorder": None,
                        "observer": "minmax"},
            "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True,
                                  "symmetric": True, "group_size": None, "block_structure": None,
                                  "actorder": None, "observer": None},
            "output_activations": None,
            "format": "float-quantized",
        }
    },
    "ignore": ["lm_head", "re:.*mlp\\.gate$"],
    "kv_cache_scheme": None,
    "sparsity_config": {},
    "global_compression_ratio": None,
}

#: Which FP8 scheme each FP8 checkpoint gets (see FP8_PER_CHANNEL for why it is the same for all).
FP8_SCHEMES: dict[str, dict[str, Any]] = {
    "zai-org/GLM-4.5-FP8": FP8_PER_CHANNEL,
    "zai-org/GLM-4.5-Air-FP8": FP8_PER_CHANNEL,  # block-128 fails here (10944 % 128 != 0)
    "zai-org/GLM-4.6-FP8": FP8_PER_CHANNEL,
    "zai-org/GLM-4.7-FP8": FP8_PER_CHANNEL,
}


def base_model(model_id: str) -> str:
    """The BF16 entry an FP8 checkpoint shares its architecture with."""
    return model_id.removesuffix("-FP8")


def model_config(model_id: str) -> dict[str, Any]:
    """The ``config.json`` of registered model ``model_id`` (KeyError for an unknown one)."""
    config = {**ARCHITECTURES[base_model(model_id)], "_name_or_path": model_id}
    quant = quantization_config(model_id)
    if quant is not None:
        config["quantization_config"] = quant
    return config


def quantization_config(model_id: str) -> dict[str, Any] | None:
    """The ``quantization_config`` of an FP8 checkpoint (None for BF16)."""
    if not model_id.endswith("-FP8"):
        return None
    return FP8_SCHEMES[model_id]


#: GLM-4.x token ids in the GLM-4.5/4.6/4.7 vocabulary. Confirmed by config.json (eos/pad: 151329, 151336,
#: 151338) and by tokenizer_config.json as quoted in glm-facts S21 (151352/151353, 151356..151359); the rest
#: follow GLM-4's numbering (151329..151338 in order) and the tag block 151350..151360 [inferred].
GLM45_TOKEN_IDS: dict[str, int] = {
    "<|endoftext|>": 151329, "[MASK]": 151330, "[gMASK]": 151331, "[sMASK]": 151332, "<sop>": 151333,
    "<eop>": 151334, "<|system|>": 151335, "<|user|>": 151336, "<|assistant|>": 151337,
    "<|observation|>": 151338,
    "<think>": 151350, "</think>": 151351, "<tool_call>": 151352, "</tool_call>": 151353,
    "<tool_response>": 151354, "</tool_response>": 151355, "<arg_key>": 151356, "</arg_key>": 151357,
    "<arg_value>": 151358, "</arg_value>": 151359, "/nothink": 151360,
}

#: GLM-4.7-Flash: its eos/pad ids are each 3491 above GLM-4.5's (confirmed by its config.json); the whole
#: special block is taken to be shifted by the same amount [unverified beyond eos/pad].
FLASH_SHIFT = 154820 - 151329


def token_ids(vocab_size: int) -> dict[str, int]:
    """The GLM token ids of the vocabulary of this size (151552 or 154880)."""
    shift = FLASH_SHIFT if vocab_size == 154880 else 0
    return {token: i + shift for token, i in GLM45_TOKEN_IDS.items()}
