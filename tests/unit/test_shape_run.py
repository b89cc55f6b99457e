"""Shape runs (--glm-weights dummy): the model directory (real config.json, FP8 quantization_config, a
tokenizer of the real vocabulary with the GLM tokens at their real ids, the family's template) and the
command (the published one plus --load-format dummy, nothing else)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_glm.catalog import architectures
from pytest_glm.catalog.models import REGISTRY, resolve_model
from pytest_glm.catalog.profiles import resolve_profile
from pytest_glm.config import ServeOptions, option_defaults, resolve
from pytest_glm.exceptions import ConfigError
from pytest_glm.reference.build import _template
from pytest_glm.reference.shape import build_tokenizer, ensure_shape_model, shape_config
from pytest_glm.serving.command import build_serve_command
from pytest_glm.serving.reference_server import servable

#: glm-facts §2.1, the values a shape run must serve, per model.
EXPECTED = {
    "zai-org/GLM-4.5": dict(hidden_size=5120, num_hidden_layers=92, n_routed_experts=160, first_k_dense_replace=3,
                            intermediate_size=12288, moe_intermediate_size=1536, use_qk_norm=True,
                            routed_scaling_factor=2.5, max_position_embeddings=131072, vocab_size=151552),
    "zai-org/GLM-4.5-Air": dict(hidden_size=4096, num_hidden_layers=46, n_routed_experts=128,
                                first_k_dense_replace=1, intermediate_size=10944, moe_intermediate_size=1408,
                                use_qk_norm=False, routed_scaling_factor=1.0, max_position_embeddings=131072),
    "zai-org/GLM-4.6": dict(hidden_size=5120, num_hidden_layers=92, max_position_embeddings=202752),
    "zai-org/GLM-4.7": dict(hidden_size=5120, num_hidden_layers=92, num_attention_heads=96, num_key_value_heads=8,
                            head_dim=128, partial_rotary_factor=0.5, attention_bias=True,
                            max_position_embeddings=202752, eos_token_id=[151329, 151336, 151338],
                            pad_token_id=151329),
    "zai-org/GLM-4.7-Flash": dict(architectures=["Glm4MoeLiteForCausalLM"], model_type="glm4_moe_lite",
                                  hidden_size=2048, num_hidden_layers=47, num_attention_heads=20, q_lora_rank=768,
                                  kv_lora_rank=512, qk_nope_head_dim=192, qk_rope_head_dim=64, v_head_dim=256,
                                  n_routed_experts=64, num_experts_per_tok=4, first_k_dense_replace=1,
                                  intermediate_size=10240, routed_scaling_factor=1.8, vocab_size=154880,
                                  eos_token_id=[154820, 154827, 154829], pad_token_id=154820),
}


@pytest.mark.parametrize("model_id", list(EXPECTED))
def test_config_is_the_real_one(model_id: str) -> None:
    config = shape_config(resolve_model(model_id))
    for key, value in EXPECTED[model_id].items():
        assert config[key] == value, key
    assert config["num_nextn_predict_layers"] == 1 and config["hidden_act"] == "silu"
    assert config["architectures"][0] == REGISTRY[model_id].architecture
    assert config["max_position_embeddings"] == REGISTRY[model_id].context_length
    assert "quantization_config" not in config


def test_every_registered_model_has_a_config() -> None:
    for model_id in REGISTRY:
        config = shape_config(resolve_model(model_id))
        assert config["_name_or_path"] == model_id
        assert (config["pad_token_id"] == min(config["eos_token_id"])), model_id


@pytest.mark.parametrize("model_id", [m for m in REGISTRY if m.endswith("-FP8")])
def test_fp8_checkpoints_get_per_channel_compressed_tensors(model_id: str) -> None:
    config = shape_config(resolve_model(model_id))
    quant = config["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors" and quant["format"] == "float-quantized"
    group = quant["config_groups"]["group_0"]
    assert group["weights"].items() >= {"num_bits": 8, "type": "float", "strategy": "channel", "dynamic": False}.items()
    assert group["input_activations"].items() >= {"num_bits": 8, "type": "float", "strategy": "token",
                                                  "dynamic": True}.items()
    assert "lm_head" in quant["ignore"] and any("gate" in name for name in quant["ignore"])
    assert "weight_block_size" not in json.dumps(quant)
    # the BF16 architecture is shared, only the quantisation differs
    assert {k: v for k, v in config.items() if k not in ("quantization_config", "_name_or_path")} == {
        k: v for k, v in shape_config(resolve_model(model_id.removesuffix("-FP8"))).items() if k != "_name_or_path"}


def test_block_128_would_not_fit_glm45_air() -> None:
    # Why per-channel: GLM-4.5-Air's dense intermediate_size is not a multiple of 128 (shared/shape-runs.md).
    assert architectures.ARCHITECTURES["zai-org/GLM-4.5-Air"]["intermediate_size"] % 128 != 0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cache = tmp_path_factory.mktemp("cache")
    return {m: ensure_shape_model(resolve_model(m), cache)
            for m in ("zai-org/GLM-4.5-Air-FP8", "zai-org/GLM-4.7", "zai-org/GLM-4.7-Flash")}


@pytest.mark.parametrize("model_id", ["zai-org/GLM-4.5-Air-FP8", "zai-org/GLM-4.7", "zai-org/GLM-4.7-Flash"])
def test_directory_holds_config_tokenizer_and_template(built: dict[str, Path], model_id: str) -> None:
    from transformers import AutoTokenizer

    path = built[model_id]
    spec = resolve_model(model_id)
    assert path.parent.name == "models" and path.name.startswith("shape-")
    config = json.loads((path / "config.json").read_text())
    assert config == json.loads(json.dumps(shape_config(spec)))
    assert (path / "chat_template.jinja").read_text() == _template(spec.family)
    assert not list(path.glob("*.safetensors"))  # --load-format dummy: no weights
    tok = AutoTokenizer.from_pretrained(str(path))
    assert len(tok) == config["vocab_size"]
    ids = architectures.token_ids(config["vocab_size"])
    for token, i in ids.items():
        assert tok.convert_tokens_to_ids(token) == i, token
        assert tok.encode(token, add_special_tokens=False) == [i], token
    assert [ids[t] for t in ("<|endoftext|>", "<|user|>", "<|observation|>")] == config["eos_token_id"]
    every = list(range(config["vocab_size"]))
    text = tok.decode(every[::97] + every[-300:], skip_special_tokens=False)
    assert "<|reserved_" in text
    for i in (0, 255, 256, 151328, config["vocab_size"] - 1):
        assert tok.convert_ids_to_tokens(i) is not None and tok.decode([i]) != ""


def test_glm45_ids_are_the_known_ones() -> None:
    ids = architectures.token_ids(151552)
    assert (ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]) == (151329, 151336, 151338)
    assert (ids["<tool_call>"], ids["</tool_call>"]) == (151352, 151353)
    assert [ids[t] for t in ("<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")] == [151356, 151357, 151358, 151359]
    assert architectures.token_ids(154880)["<|endoftext|>"] == 154820


def test_tokenizer_round_trips_text() -> None:
    tok = build_tokenizer(151552, _template("glm45"))
    text = "[gMASK]<sop><|user|>\nWeather in 東京?<|assistant|>\n<think></think>\n<tool_call>get_weather"
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=False) == text


def test_shape_directory_is_built_once(tmp_path: Path) -> None:
    spec = resolve_model("zai-org/GLM-4.6")
    first = ensure_shape_model(spec, tmp_path)
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    assert ensure_shape_model(spec, tmp_path) == first
    assert (first / "tokenizer.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(("model_id", "profile"), [("zai-org/GLM-4.7-FP8", "h200x4"), ("zai-org/GLM-4.5-Air-FP8", "h100x8"),
                                                   ("zai-org/GLM-4.7-Flash", "h200x1"), ("glm-tiny", "cpu"),
                                                   ("glm-tiny-47", "cpu")])
def test_command_adds_load_format_dummy_and_nothing_else(model_id: str, profile: str) -> None:
    spec, prof = resolve_model(model_id), resolve_profile(profile)
    real = build_serve_command(spec, prof, ServeOptions())
    dummy = build_serve_command(spec, prof, ServeOptions(dummy_weights=True))
    args = list(dummy.args)
    i = args.index("--load-format")
    assert args[i + 1] == "dummy"
    assert args[:i] + args[i + 2:] == list(real.args)
    assert (dummy.model, dummy.env, dummy.mtp, dummy.served_model_name) == (real.model, real.env, real.mtp,
                                                                             real.served_model_name)
    assert "--load-format dummy" in dict(dummy.reasons)
    assert "--load-format" not in real.args


def test_user_args_still_come_last() -> None:
    cmd = build_serve_command(resolve_model("glm-tiny"), resolve_profile("cpu"),
                              ServeOptions(dummy_weights=True, extra_args=("--load-format", "auto")))
    assert list(cmd.args[-2:]) == ["--load-format", "auto"]


def test_servable_points_a_shape_run_at_the_built_directory(tmp_path: Path) -> None:
    spec = resolve_model("zai-org/GLM-4.7-FP8")
    assert servable(spec, tmp_path) == spec  # real weights: the hub id, as before
    served = servable(spec, tmp_path, shape_run=True)
    assert served.local_path and Path(served.local_path).parent == tmp_path / "models"
    assert served.served_name == "glm-4.7-fp8" and served.model_id == spec.model_id
    cmd = build_serve_command(served, resolve_profile("h200x4"), ServeOptions(dummy_weights=True))
    assert cmd.model == served.local_path


def _values(**overrides: object) -> dict:
    return {**option_defaults(), **overrides}


def test_weights_option() -> None:
    assert resolve(_values()).weights == "real" and not resolve(_values()).shape_run
    config = resolve(_values(weights="dummy"))
    assert config.shape_run and config.serve.dummy_weights
    assert resolve(_values(weights="DUMMY")).shape_run
    with pytest.raises(ConfigError, match="--glm-weights: expected real or dummy, got 'random'"):
        resolve(_values(weights="random"))
    with pytest.raises(ConfigError, match="--glm-weights"):
        resolve(_values(weights="dummy", base_url="http://127.0.0.1:8000"))
