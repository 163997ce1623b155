"""What a server's front end spends tokenizing the seed's prompts, one request at a time.

The vLLM H200 prefix rows' TTFT fits a front end that spends ~75 ms of its one event loop on
each request before the engine sees it, and the random rows allow far less
(docs/simulator-prefix-rows.md). The two sets of rows sent different prompts: SGLang's
generated-shared-prefix data set draws every token from the whole vocabulary
(``random.choices`` over ``get_vocab().values()``, special tokens included) and decodes them;
the random rows decoded natural text. Tokenizing is the one step of an OpenAI front end whose
cost follows a prompt's content, so it is the first suspect. This measures it with the
tokenizer given; the model's own is the one that settles it:

    python benchmarks/prompt_tokenize_cost.py --tokenizer deepseek-ai/DeepSeek-R1 --text FILE

``--text``: natural text (the random rows' kind), cut into prompts of the same length as the
seed's random rows cut ShareGPT's. Prints per kind of prompt its tokens, the median and p90 ms
of one encode, and what a burst of C such requests holds one event loop (C x the median),
beside what the ~75 ms reading needs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from raybench.errors import ConfigError
from raybench.workloads.tokenizer import load_tokenizer

READING_MS = 75.0  # per request, docs/simulator.md
BURSTS = (32, 64, 128)


def generated_shared_prefix(tokenizer, rng: random.Random, prefix_len: int, question_len: int) -> str:
    """One prompt as SGLang's data set builds it: a group's prefix, a blank line, a question."""
    vocab = range(tokenizer.vocab_size)
    prefix = tokenizer.decode(rng.choices(vocab, k=prefix_len))
    return f"{prefix}\n\n{tokenizer.decode(rng.choices(vocab, k=question_len))}"


def natural(tokenizer, text: str, count: int, length: int) -> list[str]:
    """``count`` windows of ``length`` tokens of ``text``, repeated where it is shorter, decoded."""
    ids = tokenizer.encode(text)
    if not ids:
        raise SystemExit("--text: the file has no tokens")
    ids = ids * (length // len(ids) + 2)
    step = max(1, (len(ids) - length) // count)
    return [tokenizer.decode(ids[i * step:i * step + length]) for i in range(count)]


def timed(tokenizer, prompts: list[str], repeats: int) -> tuple[list[float], list[int]]:
    millis, lengths = [], []
    for prompt in prompts:
        for _ in range(repeats):
            t0 = time.perf_counter()
            ids = tokenizer.encode(prompt)
            millis.append((time.perf_counter() - t0) * 1e3)
        lengths.append(len(ids))
    return millis, lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True, help="a local directory with tokenizer.json, or a Hugging Face model name")
    parser.add_argument("--text", type=Path, default=None, help="natural text to compare with (the random rows' kind)")
    parser.add_argument("--prefix-len", type=int, default=2000)
    parser.add_argument("--question-len", type=int, default=1200)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        tokenizer = load_tokenizer(args.tokenizer)
    except ConfigError as err:
        raise SystemExit(f"--tokenizer: {err}") from None
    rng = random.Random(args.seed)
    kinds = {"generated-shared-prefix": [generated_shared_prefix(tokenizer, rng, args.prefix_len, args.question_len)
                                         for _ in range(args.prompts)]}
    if args.text is not None:
        kinds["natural text"] = natural(tokenizer, args.text.read_text(encoding="utf-8", errors="replace"),
                                        args.prompts, args.prefix_len + args.question_len)
    print(f"{tokenizer.name}: vocabulary {tokenizer.vocab_size}, {args.prompts} prompts x {args.repeats} encodes")
    header = f"{'prompts':<26}{'chars':>8}{'tokens':>8}{'median ms':>11}{'p90 ms':>9}"
    print(header + "".join(f"{'burst ' + str(c) + ' s':>12}" for c in BURSTS))
    for kind, prompts in kinds.items():
        millis, lengths = timed(tokenizer, prompts, args.repeats)
        median, p90 = statistics.median(millis), statistics.quantiles(millis, n=10)[-1]
        chars = statistics.median(len(p) for p in prompts)
        print(f"{kind:<26}{chars:>8.0f}{statistics.median(lengths):>8.0f}{median:>11.2f}{p90:>9.2f}"
              + "".join(f"{c * median / 1e3:>12.2f}" for c in BURSTS))
    print(f"the front-end reading needs {READING_MS:g} ms a request: "
          + ", ".join(f"{c * READING_MS / 1e3:g} s for a burst of {c}" for c in BURSTS))


if __name__ == "__main__":
    main()
