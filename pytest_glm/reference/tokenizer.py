"""The reference models' tokenizer: byte-level, with every GLM special token as one token.

Ids are stable: 256 byte symbols first, then the GLM tokens in the order below, then reserved tokens up to
:data:`VOCAB_SIZE`. Role and control tokens are *special* (as in GLM's tokenizer_config.json); the tag
tokens (``<think>``, ``<tool_call>``, ``<arg_key>`` ...) are ordinary added tokens, as in the real models,
so they survive ``skip_special_tokens=True`` and the reasoning parser still sees them.
"""

from __future__ import annotations

from pathlib import Path

#: Role and control tokens, special in GLM-4.x.
SPECIAL_TOKENS = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
)

#: Tag tokens: single tokens in GLM-4.x, but not special.
TAG_TOKENS = (
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
    "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "/nothink",
)

#: Generation stops at any of these (GLM's eos_token_id list: endoftext, user, observation).
STOP_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")

#: Model vocabulary size: bytes + GLM tokens + reserved padding, a multiple of 64 for the kernels.
VOCAB_SIZE = 320


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (what a ByteLevel pre-tokenizer emits)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    table = dict(zip(printable, codes, strict=True))
    return [chr(table[b]) for b in range(256)]


def token_ids() -> dict[str, int]:
    """Id of every GLM token in this vocabulary."""
    return {tok: 256 + i for i, tok in enumerate((*SPECIAL_TOKENS, *TAG_TOKENS))}


def build_tokenizer(chat_template: str):  # transformers type, imported lazily
    """A ``PreTrainedTokenizerFast`` for the reference models, with ``chat_template`` set."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {sym: i for i, sym in enumerate(_byte_symbols())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    reserved = VOCAB_SIZE - tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(f"<|reserved_{i}|>", special=True, normalized=False) for i in range(reserved)])
    assert tok.get_vocab_size() == VOCAB_SIZE
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = chat_template
    return fast


def save_tokenizer(directory: Path, chat_template: str) -> None:
    tokenizer = build_tokenizer(chat_template)
    tokenizer.save_pretrained(str(directory))
    # transformers writes the template into its own file; keep it there under the conventional name.
    (directory / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
