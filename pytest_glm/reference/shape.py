"""The model directory of a shape run (``--glm-weights dummy``): a registered GLM-4.x model at its real
size, served with random weights (``vllm serve DIR --load-format dummy``).

The directory holds what vLLM reads besides the weights: the model's real ``config.json`` (with the FP8
checkpoints' ``quantization_config``; catalog/architectures.py), a tokenizer of the real vocabulary size
with every GLM token at its real id, and the family's chat template. It is built once per content into
the cache, beside the reference models. Nothing is downloaded.

The tokenizer is byte-level (the reference models' 256 byte symbols at ids 0..255), padded to the real
vocabulary size with short alphanumeric tokens, so that every id decodes: random weights produce any id.
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Any

from pytest_glm.catalog import architectures
from pytest_glm.catalog.models import ModelSpec
from pytest_glm.reference.build import _template, build_once
from pytest_glm.reference.tokenizer import SPECIAL_TOKENS, STOP_TOKENS, TAG_TOKENS, _byte_symbols

SHAPE_VERSION = 1

#: Characters of the padding tokens: two or three of them (62**3 is more than any GLM vocabulary needs).
_FILL_ALPHABET = string.ascii_letters + string.digits


def _filler(n: int) -> str:
    """The ``n``-th padding token: ``aa``, ``ab``, ... then three characters; never a single byte symbol."""
    base = len(_FILL_ALPHABET)
    if n < base**2:
        return _FILL_ALPHABET[n // base] + _FILL_ALPHABET[n % base]
    n -= base**2
    return _FILL_ALPHABET[n // base**2] + _FILL_ALPHABET[(n // base) % base] + _FILL_ALPHABET[n % base]


def build_tokenizer(vocab_size: int, chat_template: str) -> Any:  # a transformers PreTrainedTokenizerFast
    """A byte-level tokenizer of exactly ``vocab_size`` ids with the GLM tokens at their real ids
    (catalog.architectures.token_ids): role and control tokens special, tag tokens ordinary added tokens
    (as in GLM's tokenizer_config.json), the other ids of the GLM special block reserved special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ids = architectures.token_ids(vocab_size)
    first_special = min(ids.values())
    vocab = {sym: i for i, sym in enumerate(_byte_symbols())}
    for i in range(len(vocab), first_special):
        vocab[_filler(i - 256)] = i
    by_id = {i: token for token, i in ids.items()}
    reserved = []
    for i in range(first_special, vocab_size):
        token = by_id.get(i) or f"<|reserved_{i}|>"
        vocab[token] = i
        if i not in by_id:
            reserved.append(token)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    # Tokens already in the vocabulary keep their ids when added.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (*SPECIAL_TOKENS, *reserved)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    assert tok.get_vocab_size() == vocab_size, (tok.get_vocab_size(), vocab_size)
    eos = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos,
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = chat_template
    return fast


def shape_config(spec: ModelSpec) -> dict[str, Any]:
    """The config.json of a shape run of ``spec`` (a registered model)."""
    return architectures.model_config(spec.model_id)


def _fingerprint(spec: ModelSpec) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([SHAPE_VERSION, shape_config(spec)], sort_keys=True).encode())
    digest.update(_template(spec.family).encode())
    return digest.hexdigest()[:12]


def ensure_shape_model(spec: ModelSpec, cache_dir: Path) -> Path:
    """The built shape-run directory of registered model ``spec``, building it if this content never was."""
    name = spec.model_id.rsplit("/", 1)[-1].lower()
    return build_once(cache_dir / "models" / f"shape-{name}-{_fingerprint(spec)}",
                      lambda staging: write_shape_model(spec, staging))


def write_shape_model(spec: ModelSpec, directory: Path) -> None:
    """config.json, generation_config.json, the tokenizer and the chat template of ``spec`` into ``directory``."""
    config = shape_config(spec)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": config["eos_token_id"], "pad_token_id": config["pad_token_id"], "temperature": 1.0},
        indent=2) + "\n")
    template = _template(spec.family)
    tokenizer = build_tokenizer(config["vocab_size"], template)
    tokenizer.save_pretrained(str(directory))
    (directory / "chat_template.jinja").write_text(template, encoding="utf-8")


def stop_ids(vocab_size: int) -> list[int]:
    """The eos ids of this vocabulary, as the tokenizer numbers them."""
    ids = architectures.token_ids(vocab_size)
    return [ids[t] for t in STOP_TOKENS]
