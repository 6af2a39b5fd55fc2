"""The in-process backend on a tiny random Llama: exact, batch-invariant, deterministic."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from monitor.errors import BackendError
from monitor.probing.backends.base import GenerationRequest, LoglikelihoodRequest, cut_at_stops
from monitor.probing.backends.transformers import TransformersBackend, pick_device, pick_dtype

REQUESTS = [
    LoglikelihoodRequest("Question: What is the capital of France?\nAnswer:",
                         (" Paris", " London", " Berlin and Rome", " Madrid")),
    LoglikelihoodRequest("Question: 2 plus 3?\nAnswer: ", ("5", "six", "23 or 24")),
    LoglikelihoodRequest("The quick brown fox", (" jumps", " sleeps over the lazy dog")),
]


def naive_loglikelihood(backend: TransformersBackend, context: str, continuation: str) -> float:
    """The plain way: one full forward pass per (context, continuation)."""
    ctx, cont = backend.encode_pair(context, continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(backend.model(ids).logits[0].float(), dim=-1)
    return sum(float(logprobs[len(ctx) - 1 + j, tok]) for j, tok in enumerate(cont))


def test_shared_context_scoring_equals_one_pass_per_choice(tiny_backend: Any) -> None:
    fast = tiny_backend.loglikelihood(REQUESTS)
    for request, scores in zip(REQUESTS, fast, strict=True):
        expected = [naive_loglikelihood(tiny_backend, request.context, c) for c in request.continuations]
        assert scores == pytest.approx(expected, abs=1e-4)


def test_context_runs_once_per_question_not_once_per_choice(tiny_backend: Any) -> None:
    seen: list[tuple[int, ...]] = []
    original = tiny_backend.model.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    tiny_backend.model.forward = counting
    try:
        tiny_backend.loglikelihood(REQUESTS[:2])
    finally:
        del tiny_backend.model.forward
    sequences = [ctx + cont[:-1] for ctx, conts in (tiny_backend._encode_request(r) for r in REQUESTS[:2])
                 for cont in conts]
    distinct_prefixes = {tuple(seq[:i]) for seq in sequences for i in range(1, len(seq) + 1)}
    one_per_choice = sum(len(seq) for seq in sequences)
    assert seen == [(1, len(distinct_prefixes))], "one pass; every shared prefix fed once"
    assert len(distinct_prefixes) < one_per_choice


def test_eager_attention_gets_an_additive_mask_and_the_same_scores(tiny_parts: Any) -> None:
    import copy

    model, tokenizer = tiny_parts
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    sdpa = TransformersBackend(model, tokenizer, name="t").loglikelihood(REQUESTS)
    other = TransformersBackend(eager, tokenizer, name="t").loglikelihood(REQUESTS)
    for a, b in zip(sdpa, other, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_trailing_space_moves_to_the_continuation_like_lm_eval(tiny_backend: Any) -> None:
    with_space = tiny_backend.encode_pair("Answer: ", "5")
    without = tiny_backend.encode_pair("Answer:", " 5")
    assert with_space == without


def test_scores_do_not_depend_on_batch_size(tiny_parts: Any) -> None:
    model, tokenizer = tiny_parts
    one = TransformersBackend(model, tokenizer, name="t", batch_size=1).loglikelihood(REQUESTS)
    many = TransformersBackend(model, tokenizer, name="t", batch_size=8).loglikelihood(REQUESTS)
    for a, b in zip(one, many, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
        assert a.index(max(a)) == b.index(max(b))


def test_rolling_loglikelihood_counts_every_token(tiny_backend: Any) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    [result] = tiny_backend.loglikelihood_rolling([text])
    tokens = tiny_backend._encode(text)
    assert result.tokens == len(tokens)
    expected = naive_loglikelihood(tiny_backend, "", text)
    assert result.logprob == pytest.approx(expected, abs=1e-4)


def test_rolling_windows_cover_texts_longer_than_the_model(tiny_parts: Any) -> None:
    model, tokenizer = tiny_parts
    backend = TransformersBackend(model, tokenizer, name="t")
    backend.max_length = 8
    text = "The quick brown fox jumps over the lazy dog. " * 3
    [result] = backend.loglikelihood_rolling([text])
    assert result.tokens == len(backend._encode(text)) > 8
    assert result.logprob < 0


def test_generation_is_greedy_deterministic_and_batch_invariant(tiny_parts: Any) -> None:
    model, tokenizer = tiny_parts
    requests = [GenerationRequest("What is the capital of France?", max_new_tokens=6),
                GenerationRequest("Hi", max_new_tokens=3),
                GenerationRequest("Tell me about Jupiter and Mars please", max_new_tokens=6)]
    batched = TransformersBackend(model, tokenizer, name="t", batch_size=3).generate(requests)
    single = TransformersBackend(model, tokenizer, name="t", batch_size=1).generate(requests)
    assert batched == single
    assert batched == TransformersBackend(model, tokenizer, name="t", batch_size=3).generate(requests)
    assert all(isinstance(text, str) for text in batched)


def test_generation_is_cut_at_the_first_stop_string() -> None:
    assert cut_at_stops("Paris.\n\nQuestion: next", ("\n\n", "Question:")) == "Paris."
    assert cut_at_stops("Paris", ("\n",)) == "Paris"
    assert cut_at_stops("a|b", ("", "|")) == "a"


def test_runtime_failure_becomes_a_backend_error(tiny_backend: Any) -> None:
    bad = LoglikelihoodRequest("context", ("",))
    with pytest.raises(BackendError) as caught:
        tiny_backend.loglikelihood([bad])
    assert caught.value.kind == "tokenization"


def test_loading_a_missing_model_is_a_backend_error(tmp_path: Any) -> None:
    with pytest.raises(BackendError) as caught:
        TransformersBackend.load(str(tmp_path / "nowhere"))
    assert caught.value.kind == "load"


def test_device_and_dtype_choice() -> None:
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") in ("cpu", "cuda")
    assert pick_dtype("auto", "cpu") == torch.float32
    assert pick_dtype("bfloat16", "cpu") == torch.bfloat16
