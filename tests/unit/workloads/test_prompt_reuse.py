"""Prompts a server was sent before: the share of a cell's prompt tokens an earlier cell sent."""

import pytest

from raybench.backends.external import ExternalBackend
from raybench.backends.sglang import SGLangBackend
from raybench.backends.sim import SimBackend
from raybench.backends.trtllm import TRTLLMBackend
from raybench.backends.vllm import VLLMBackend
from raybench.sim.features import PrefixCache, defaults
from raybench.workloads import RandomWorkload, SharedPrefixWorkload
from raybench.workloads.reuse import SAMPLE_PROMPTS, PromptHistory


def sample(workload):
    return workload.build(range(min(SAMPLE_PROMPTS, workload.num_requests)))


def random(seed=0, num_prompts=100, output_len=10, input_len=320):
    return RandomWorkload(num_prompts=num_prompts, input_len=input_len, output_len=output_len, seed=seed)


def test_a_sweep_s_cells_send_the_same_prompts_and_a_repeat_does_not():
    history = PromptHistory()
    assert history.reuse(sample(random())) is None  # nothing sent yet
    history.add("c4", sample(random()))
    # the next concurrency of the sweep: the same seed, so the same prompts, whatever else differs
    reuse = history.reuse(sample(random(num_prompts=500, output_len=800)))
    assert (reuse.share, reuse.cells, reuse.sampled, reuse.flagged) == (1.0, ("c4",), 64, True)
    assert history.reuse(sample(random(seed=1))) is None  # repeat 2: seed + 1, other prompts
    history.clear()  # the server's cache was reset
    assert history.reuse(sample(random())) is None


def test_shared_prefixes_count_as_far_as_they_go_and_every_source_cell_is_named():
    history = PromptHistory()
    groups = {"num_groups": 4, "prompts_per_group": 16, "output_len": 10, "seed": 0}
    history.add("p1", sample(SharedPrefixWorkload(prefix_len=208, question_len=112, **groups)))
    history.add("r", sample(random(input_len=48)))
    # longer questions: the prefix (208 tokens) and the first 112 of each question were sent before
    other = SharedPrefixWorkload(prefix_len=208, question_len=192, **groups)
    reuse = history.reuse(sample(other))
    assert reuse.cells == ("p1",) and reuse.share == pytest.approx((208 + 112) / 400)
    assert history.reuse(sample(SharedPrefixWorkload(prefix_len=208, question_len=192, **{**groups, "seed": 1}))) \
        is None  # another seed: other prefixes, other questions
    both = [*sample(random(input_len=48)), *sample(other)]
    assert history.reuse(both).cells == ("p1", "r")  # in the order they ran
    record = history.reuse(both).to_json()
    assert set(record) == {"share", "cells", "sampled_prompts", "block_tokens", "flagged"}


def test_a_common_template_alone_is_not_flagged():
    import numpy as np

    from raybench.workloads.base import RequestSpec

    def prompt(i, head):
        ids = np.concatenate([np.full(16, 7, np.int32), np.arange(i * 400, i * 400 + 384, dtype=np.int32) + head])
        return RequestSpec(request_id=i, prompt_token_ids=ids, prompt_tokens=400, max_tokens=8)

    history = PromptHistory()
    history.add("a", [prompt(i, 0) for i in range(8)])
    reuse = history.reuse([prompt(i, 100_000) for i in range(8)])  # one 16-token system line in common
    assert reuse.share == pytest.approx(16 / 400) and not reuse.flagged


@pytest.mark.parametrize(("backend", "version", "caches"), [
    (VLLMBackend(), "0.7.4.dev181+gf35f8e22", False),  # the V0 engine: off unless asked for
    (VLLMBackend(), "0.8.5", True),  # V1 from 0.8.0: on
    (VLLMBackend(), None, True),  # no version: it may
    (VLLMBackend(enable_prefix_caching=True), "0.7.3", True),
    (VLLMBackend(enable_prefix_caching=False), "0.11.0", False),
    (VLLMBackend(extra_args=("--no-enable-prefix-caching",)), "0.11.0", False),
    (VLLMBackend(env={"VLLM_USE_V1": "1"}), "0.7.3", True),
    (VLLMBackend(env={"VLLM_USE_V1": "0"}), "0.9.0", False),
    (SGLangBackend(), "0.4.3", True),
    (SGLangBackend(disable_radix_cache=True), "0.4.3", False),
    (TRTLLMBackend(), None, True),
    (ExternalBackend(name="x", url="http://127.0.0.1:1"), None, True),
    (SimBackend(timing="zero"), None, False),  # no engine, no cache: latencies do not depend on one
    (SimBackend(timing="engine", profile="sglang"), None, defaults("sglang").prefix_cache is not PrefixCache.NONE),
    (SimBackend(timing="engine", engine_features=defaults("vllm").with_(prefix_cache=PrefixCache.BLOCK_HASH)),
     None, True),
])
def test_which_servers_may_answer_from_a_prefix_cache(backend, version, caches):
    assert backend.may_cache_prefixes(version) is caches
