"""Tiny Hugging Face tokenizers made on the spot (no network): a byte-level BPE and a word-level one.

Each is saved as ``tokenizer.json`` + ``tokenizer_config.json`` (with a ChatML-style chat
template), the files a model repository ships. The BPE one is the interesting case: N random
ids decode to text that re-encodes to a different number of tokens, as with GPT-2 or Llama 3.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a benchmark sends many requests to an inference server and measures every token",
    "time to first token and inter token latency are measured per request",
    "large language models predict the next token from the tokens before it",
    "ray schedules actors on nodes of a cluster with cpus and gpus",
    "prefix caching reuses the key value cache of a shared system prompt",
    "throughput is tokens per second over the whole run, latency is per request",
    "continuous batching adds new requests to the running batch at every step",
    "Numbers like 3200, 800 and 1024 appear in benchmark tables; so do words, punctuation!",
    "Zebras, quokkas & axolotls: unusual animals with unusual names?",
]


def make_tokenizer(directory: Path, *, kind: str = "bpe", vocab_size: int = 600, chat_template: bool = True) -> Path:
    """Train a tokenizer on a few sentences and save it in ``directory``; returns the directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=None))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    elif kind == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    else:
        raise ValueError(kind)
    tokenizer.train_from_iterator(_CORPUS * 3, trainer=trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
              "model_max_length": 4096, "tokenizer_class": "PreTrainedTokenizerFast"}
    if chat_template:
        config["chat_template"] = CHAT_TEMPLATE
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return directory
