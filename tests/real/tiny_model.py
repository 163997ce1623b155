"""A tiny, randomly initialised Llama and its own tokenizer, made locally (no hub access).

Run with the vLLM venv's Python (it has transformers and tokenizers)::

    python tiny_model.py OUT_DIR

The vocabulary (at most 4096 ids) is far below the 100k ids a tokenizer-less random prompt may draw,
so a benchmark of this model passes only when prompts come from its tokenizer.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

VOCAB_SIZE = 4096
SPECIALS = ["<unk>", "<s>", "</s>"]


def _corpus() -> list[str]:
    """Enough varied ASCII text for a byte-level BPE to fill its vocabulary."""
    rng = random.Random(0)
    syllables = [a + b + c for a in "bcdfghjklmnprstvwz" for b in "aeiouy" for c in ("", "n", "r", "s", "l", "t")]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(20000)]
    return [" ".join(rng.choices(words, k=50)) + "." for _ in range(4000)]


def build_tokenizer(out: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # the alphabet is the corpus's ASCII: no id decodes to a fragment of a UTF-8 character,
    # so every generated token streams as text
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    fast.save_pretrained(out)
    return len(fast)


def build_model(out: Path, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        # head_dim 64 (the CPU attention kernels have none for 16); big enough that a decode step
        # takes milliseconds, so client overheads stay small beside the server's time
        vocab_size=vocab_size, hidden_size=768, intermediate_size=2048, num_hidden_layers=4,
        num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = build_tokenizer(out)
    build_model(out, vocab_size)
    (out / "raybench-tiny.json").write_text(json.dumps({"vocab_size": vocab_size}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
