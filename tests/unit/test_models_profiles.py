"""Model registry, local-directory recognition, profiles and the fit check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_glm.catalog.models import REGISTRY, family_of_template, guess_model, resolve_model, spec_from_directory
from pytest_glm.catalog.profiles import PROFILES, check_fit, resolve_profile
from pytest_glm.catalog.versions import parsers_for
from pytest_glm.exceptions import ConfigError, ModelDoesNotFit, UnknownModel, UnknownProfile

TEMPLATES = Path(__file__).parents[2] / "pytest_glm" / "reference" / "templates"


@pytest.mark.parametrize(("model_id", "family", "parser"), [
    ("zai-org/GLM-4.5", "glm45", "glm45"), ("zai-org/GLM-4.5-FP8", "glm45", "glm45"),
    ("zai-org/GLM-4.5-Air", "glm45", "glm45"), ("zai-org/GLM-4.5-Air-FP8", "glm45", "glm45"),
    ("zai-org/GLM-4.6", "glm45", "glm45"), ("zai-org/GLM-4.6-FP8", "glm45", "glm45"),
    ("zai-org/GLM-4.7", "glm47", "glm47"), ("zai-org/GLM-4.7-FP8", "glm47", "glm47"),
    ("zai-org/GLM-4.7-Flash", "glm47", "glm47"),
])
def test_registry_families(model_id: str, family: str, parser: str) -> None:
    spec = resolve_model(model_id)
    (tool, _), (reasoning, _) = parsers_for(spec.family, "")
    assert (spec.family, tool, reasoning) == (family, parser, parser)
    assert spec.has_mtp
    assert spec.precision == ("fp8" if model_id.endswith("FP8") else "bf16")


def test_registry_facts() -> None:
    assert REGISTRY["zai-org/GLM-4.7-Flash"].architecture == "Glm4MoeLiteForCausalLM"
    assert REGISTRY["zai-org/GLM-4.5-Air"].context_length == 131072
    assert REGISTRY["zai-org/GLM-4.7"].context_length == 202752


def test_lookup_is_forgiving_about_case_and_prefix() -> None:
    assert resolve_model("glm-4.7-fp8").model_id == "zai-org/GLM-4.7-FP8"
    assert guess_model("glm-4.7-fp8").model_id == "zai-org/GLM-4.7-FP8"
    assert guess_model("zai-org/GLM-4.5-Air").model_id == "zai-org/GLM-4.5-Air"
    assert guess_model("llama") is None


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(UnknownModel) as info:
        resolve_model("zai-org/GLM-9")
    text = str(info.value)
    assert text.startswith("--glm-model: unknown model 'zai-org/GLM-9'")
    assert "zai-org/GLM-4.7-FP8" in text and "glm-tiny" in text


def _model_dir(tmp_path: Path, family: str, arch: str = "Glm4MoeForCausalLM") -> Path:
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": [arch], "max_position_embeddings": 4096, "num_nextn_predict_layers": 1}))
    (tmp_path / "chat_template.jinja").write_text((TEMPLATES / f"{family}.jinja").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 2048)
    return tmp_path


@pytest.mark.parametrize("family", ["glm45", "glm47"])
def test_local_directory_is_recognised(tmp_path: Path, family: str) -> None:
    spec = resolve_model(str(_model_dir(tmp_path, family)))
    assert spec.family == family
    assert spec.mtp_layers == 1 and spec.context_length == 4096
    assert spec.local_path == str(tmp_path)
    assert spec.weight_gib == pytest.approx(2048 / 1024**3)


def test_local_directory_without_glm_architecture(tmp_path: Path) -> None:
    _model_dir(tmp_path, "glm45", arch="LlamaForCausalLM")
    with pytest.raises(ConfigError, match="LlamaForCausalLM"):
        spec_from_directory(tmp_path)


def test_local_directory_with_foreign_template(tmp_path: Path) -> None:
    _model_dir(tmp_path, "glm45")
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}")
    with pytest.raises(ConfigError, match=r"neither the GLM-4\.5/4\.6 nor the GLM-4\.7 format"):
        spec_from_directory(tmp_path)


def test_template_in_tokenizer_config(tmp_path: Path) -> None:
    _model_dir(tmp_path, "glm47")
    template = (tmp_path / "chat_template.jinja").read_text()
    (tmp_path / "chat_template.jinja").unlink()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    assert spec_from_directory(tmp_path).family == "glm47"


def test_family_of_unrenderable_template() -> None:
    assert family_of_template("{% if %}") is None


def test_profiles_present() -> None:
    for name in ("cpu", "h100x8", "h200x4", "h200x8", "mi300x8", "mi325x8", "mi355x8"):
        assert resolve_profile(name).name == name
    with pytest.raises(UnknownProfile, match=r"known profiles: .*h200x4"):
        resolve_profile("tpu-v5")


def test_cpu_profile_uses_host_memory() -> None:
    assert resolve_profile("cpu").memory_gib > 1


@pytest.mark.parametrize(("model", "profile", "fits"), [
    ("zai-org/GLM-4.7", "h200x4", False),      # BF16 355B on 4 x H200: refused
    ("zai-org/GLM-4.7-FP8", "h200x4", True),   # the recipe's MTP example
    ("zai-org/GLM-4.7", "h200x8", True),
    ("zai-org/GLM-4.5", "h100x8", False),      # README: H100 x 16 for BF16
    ("zai-org/GLM-4.5-FP8", "h100x8", True),
    ("zai-org/GLM-4.5-Air", "h100x8", True),
    ("zai-org/GLM-4.7", "mi300x8", True),
    ("zai-org/GLM-4.7-FP8", "cpu", False),
    ("glm-tiny", "cpu", True),
])
def test_fit_check(model: str, profile: str, fits: bool) -> None:
    spec, prof = resolve_model(model), resolve_profile(profile)
    if fits:
        check_fit(spec, prof)
    else:
        with pytest.raises(ModelDoesNotFit) as info:
            check_fit(spec, prof)
        assert profile in str(info.value)


def test_fit_refusal_says_what_would_fit() -> None:
    with pytest.raises(ModelDoesNotFit) as info:
        check_fit(resolve_model("zai-org/GLM-4.7"), PROFILES["h200x4"])
    text = str(info.value)
    assert "profiles that fit zai-org/GLM-4.7: h200x8, h100x16, h200x16, mi300x8, mi325x8, mi355x8" in text
    assert "models that fit h200x4:" in text and "zai-org/GLM-4.7-FP8" in text


def test_threshold_file(tmp_path: Path) -> None:
    from pytest_glm.catalog.profiles import load_thresholds

    base = resolve_profile("cpu").thresholds
    path = tmp_path / "t.toml"
    path.write_text("[thresholds]\ntool_trigger_f1 = 0.9\nbatch_sizes = [1, 2]\nload_concurrency = 4\n")
    t = load_thresholds(path, base)
    assert (t.tool_trigger_f1, t.batch_sizes, t.load_concurrency) == (0.9, (1, 2), 4)
    assert t.tool_schema_accuracy == base.tool_schema_accuracy
    path.write_text("tool_trigger_f2 = 0.9\n")
    with pytest.raises(ConfigError, match="unknown key 'tool_trigger_f2'"):
        load_thresholds(path, base)
    path.write_text("load_concurrency = 'many'\n")
    with pytest.raises(ConfigError, match="load_concurrency must be an integer"):
        load_thresholds(path, base)
    with pytest.raises(ConfigError, match="cannot read"):
        load_thresholds(tmp_path / "missing.toml", base)


def test_threshold_file_slo_tables(tmp_path: Path) -> None:
    from pytest_glm.catalog.profiles import for_reference_model, load_thresholds

    base = for_reference_model(resolve_profile("cpu")).thresholds
    path = tmp_path / "t.toml"
    path.write_text("mtp_position_acceptance = [0.9, 0.6, 0.4]\n[slo.default]\np99_itl_ms = 100\n[slo.balanced]\np99_ttft_ms = 500\n[slo.balanced.8]\n"
                    "median_ttft_ms = 50\noutput_throughput = 1000\n[workloads]\nlong_prompt = [4000, 10]\n"
                    "[baseline_tolerance]\np99_itl_ms = 0.25\n[goodput_slo_ms]\nttft = 900\n")
    t = load_thresholds(path, base)
    at8, at4 = t.slo_limits("balanced", 8), t.slo_limits("balanced", 4)
    assert (at8["median_ttft_ms"], at8["p99_ttft_ms"], at8["p99_itl_ms"], at8["output_throughput"]) == (50, 500, 100, 1000)
    assert at4["median_ttft_ms"] == base.slo_limits("balanced", 4)["median_ttft_ms"]  # the profile's stays
    assert at4["p99_ttft_ms"] == 500  # the file's [slo.balanced] replaces the profile's per-batch value
    assert t.slo_limits("decode_heavy", 1)["p99_itl_ms"] == 100  # and its [slo.default] every cell's
    assert t.workloads["long_prompt"] == (4000, 10) and t.workloads["balanced"] == base.workloads["balanced"]
    assert t.baseline_tolerance == {**base.baseline_tolerance, "p99_itl_ms": 0.25}  # merged: the file's entry wins
    assert t.baseline_tolerance["default"] == base.baseline_tolerance["default"]
    assert t.goodput_slo_ms["ttft"] == 900 and t.goodput_slo_ms["tpot"] == base.goodput_slo_ms["tpot"]
    assert [t.position_minimum(p) for p in range(5)] == [0.9, 0.6, 0.4, 0.4, 0.4]


@pytest.mark.parametrize(("text", "message"), [
    ("[slo.balanced]\np99_tft_ms = 1\n", "[slo.balanced] unknown figure 'p99_tft_ms'"),
    ("[slo.balanced]\np99_ttft_ms = 'fast'\n", "slo.balanced.p99_ttft_ms must be a number"),
    ("[slo.balanced.eight]\np99_ttft_ms = 1\n", "slo.balanced.eight must be a batch size"),
    ("[workloads]\nx = [10]\n", "workloads.x must be [prompt_tokens, output_tokens]"),
    ("[goodput_slo_ms]\nitl = 5\n", "goodput_slo_ms must be keyed by ttft, tpot, e2el"),
    ("mtp_position_acceptance = []\n", "mtp_position_acceptance must be a non-empty list of numbers"),
])
def test_threshold_file_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    from pytest_glm.catalog.profiles import load_thresholds

    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_thresholds(path, resolve_profile("cpu").thresholds)
    assert message in str(err.value) and "--glm-thresholds" in str(err.value)


def test_prompt_vocab_of_checkpoints(tmp_path: Path) -> None:
    from pytest_glm.catalog.models import REFERENCE_MODELS

    assert resolve_model("zai-org/GLM-4.7-FP8").prompt_vocab == 151329  # <|endoftext|>, the first special id
    assert resolve_model("zai-org/GLM-4.7-Flash").prompt_vocab == 154820
    assert REFERENCE_MODELS["glm-tiny"].prompt_vocab == 320  # trained on random ids over the whole vocabulary
    d = _model_dir(tmp_path, "glm45")
    config = json.loads((d / "config.json").read_text())
    config.update(vocab_size=151552, eos_token_id=[151329, 151336, 151338], pad_token_id=151329)
    (d / "config.json").write_text(json.dumps(config))
    assert spec_from_directory(d).prompt_vocab == 151329


def test_latency_limits_are_the_reference_models_only() -> None:
    """Measured limits (pytest_glm/catalog/thresholds/<profile>.reference.toml) judge the reference models; a real
    model on the same profile gets none, so its cells skip unless --glm-thresholds or a baseline says more."""
    from pytest_glm.config import option_defaults, resolve

    def thresholds(profile: str, model: str):
        values = {**option_defaults(), "profile": profile, "model": model, "base_url": "http://127.0.0.1:1"}
        return resolve(values).profile.thresholds

    tiny = thresholds("cpu", "glm-tiny")
    assert tiny.slo_limits("balanced", 8)["median_ttft_ms"] > 0 and tiny.goodput_slo_ms["ttft"] > 0
    assert thresholds("h200x1", "glm-tiny").batch_sizes == (1, 16, 64)
    assert thresholds("h200x1", "glm-tiny").slo_limits("decode_heavy", 64)["median_tpot_ms"] > 0
    real = thresholds("h200x8", "zai-org/GLM-4.7-FP8")
    assert real.slo == {} and real.batch_sizes == (1, 16, 32, 64, 128, 256, 512)
    assert thresholds("h100x1", "glm-tiny").slo == {}  # not measured there yet


def test_every_shipped_reference_threshold_file_loads() -> None:
    from pytest_glm.catalog.profiles import PROFILES, REFERENCE_THRESHOLDS, for_reference_model

    files = sorted(REFERENCE_THRESHOLDS.glob("*.reference.toml"))
    assert files
    for path in files:
        name = path.name.removesuffix(".reference.toml")
        assert name in PROFILES, f"{path.name} names no profile"
        assert for_reference_model(PROFILES[name]).thresholds.slo
