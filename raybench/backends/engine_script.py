"""Offline engine mode in the engine's own interpreter: one timed ``vllm.LLM.generate``.

Run by ``raybench.backends.engine_process`` with the Python of the environment the engine is
installed in (a virtualenv of its own, as a ``vllm`` executable's shebang names). It reads a
JSON job on stdin and prints one JSON line starting with ``RESULT_MARK`` on stdout. It
imports nothing from raybench (raybench need not be installed there): only the engine.
"""

import json
import os
import sys
import time

# Python puts this script's folder first on the path, and raybench's backends folder has a
# vllm.py of its own: the engine must come from the environment instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

RESULT_MARK = "RAYBENCH_ENGINE_RESULT "


def generate_vllm(job):
    import vllm

    llm = vllm.LLM(**job["engine_kwargs"])
    params = [vllm.SamplingParams(n=1, temperature=job["temperature"], top_p=job["top_p"], ignore_eos=True,
                                  max_tokens=m) for m in job["max_tokens"]]
    inputs = [{"prompt_token_ids": ids} for ids in job["prompts"]]
    t0 = time.perf_counter()
    outputs = llm.generate(inputs, sampling_params=params, use_tqdm=False)
    elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "prompt_tokens": [len(o.prompt_token_ids) for o in outputs],
            "output_tokens": [len(o.outputs[0].token_ids) for o in outputs], "version": vllm.__version__}


ENGINES = {"vllm": generate_vllm}


def main():
    job = json.load(sys.stdin)
    try:
        result = ENGINES[job["engine"]](job)
    except ImportError as err:
        result = {"error": f"cannot import the engine in {sys.executable}: {err}"}
    sys.stdout.write("\n" + RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
