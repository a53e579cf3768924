"""One settings object: flags beat environment variables, which beat defaults."""

import pytest

from llm_dit.runtime.settings import Settings, load_settings


def test_defaults():
    s = load_settings([], environ={})
    assert s == Settings()
    assert (s.model_path, s.vl_model_path, s.tiny, s.port) == (
        "Tongyi-MAI/Z-Image-Turbo", "Qwen/Qwen3-VL-4B-Instruct", False, 0)


def test_environment_then_flags():
    env = {"LLM_DIT_MODEL_PATH": "/models/zimage", "LLM_DIT_TINY": "1", "LLM_DIT_PORT": "9000",
           "LLM_DIT_VAE_DEVICE": "cpu"}
    s = load_settings([], environ=env)
    assert (s.model_path, s.tiny, s.port, s.vae_device) == ("/models/zimage", True, 9000, "cpu")
    s = load_settings(["--model-path", "/other", "--no-tiny", "--port", "7000", "--vl-model-path", "/vl"], environ=env)
    assert (s.model_path, s.tiny, s.port, s.vl_model_path) == ("/other", False, 7000, "/vl")


def test_every_field_has_a_flag_and_an_env_var():
    from dataclasses import fields

    from llm_dit.runtime.settings import build_parser

    help_text = build_parser().format_help()
    for f in fields(Settings):
        assert "--" + f.name.replace("_", "-") in help_text
        assert "LLM_DIT_" + f.name.upper() in help_text


@pytest.mark.parametrize("env,message", [
    ({"LLM_DIT_TINY": "maybe"}, "LLM_DIT_TINY='maybe' is not a boolean"),
    ({"LLM_DIT_PORT": "eighty"}, "LLM_DIT_PORT='eighty' is not an integer"),
    ({"LLM_DIT_TRANSFORMER_DEVICE": "tpu"}, "transformer_device='tpu' is not a device"),
    ({"LLM_DIT_PORT": "70000"}, "port=70000 is out of range"),
])
def test_bad_values_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        load_settings([], environ=env)


def test_bad_flag_exits_with_usage():
    with pytest.raises(SystemExit):
        load_settings(["--dtype", "float8"], environ={})
