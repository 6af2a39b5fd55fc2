"""The continuous-batching greedy loop against plain `generate`, token for token (tiny model)."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest

from monitor.errors import BackendError
from monitor.probing.backends.base import GenerationRequest, cut_at_stops
from monitor.probing.backends.greedy import GreedyDecoder
from monitor.probing.backends.transformers import TransformersBackend

SHARPEN = 10.0
REQUESTS = [
    GenerationRequest("What is the capital of France?", max_new_tokens=9),
    GenerationRequest("Hi", max_new_tokens=3),
    GenerationRequest("Tell me about Jupiter and Mars please, in one long sentence", max_new_tokens=12),
    GenerationRequest("Name a colour.", max_new_tokens=1),
    GenerationRequest("Which planet is the largest?", max_new_tokens=7, system_prompt="Be brief."),
    GenerationRequest("Count to five", max_new_tokens=10, system_prompt="You count."),
    GenerationRequest("What is two plus two?", max_new_tokens=5),
]


def _plain_ids(model: Any, prompt: list[int], max_new_tokens: int) -> list[int]:
    import torch

    with torch.inference_mode():
        ones = torch.ones(1, len(prompt), dtype=torch.long)
        out = model.generate(torch.tensor([prompt]), attention_mask=ones,
                             do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=0,
                             temperature=None, top_p=None, top_k=None)
    tokens = out[0, len(prompt):].tolist()
    eos = model.generation_config.eos_token_id
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def _prompt(tokenizer: Any, request: GenerationRequest) -> list[int]:
    messages = TransformersBackend._messages(request)
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"])


def _plain(model: Any, tokenizer: Any, request: GenerationRequest) -> list[int]:
    """`model.generate` on the prompt alone, up to (not including) the first end token."""
    return _plain_ids(model, _prompt(tokenizer, request), request.max_new_tokens)


@pytest.fixture(scope="module")
def sharp_model(tiny_parts: Any) -> Any:
    """A tiny model with weights large enough that its attention is peaked: an off-by-one in a
    position or a mask column changes what it generates (at the usual 0.02 init it barely does)."""
    import torch

    model = copy.deepcopy(tiny_parts[0])
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(SHARPEN)
    return model


@pytest.fixture(scope="module")
def stopping_model(tiny_parts: Any, sharp_model: Any) -> Any:
    """The sharp model with an end token it actually produces, so rows end at different steps."""
    produced = Counter(t for r in REQUESTS for t in _plain(sharp_model, tiny_parts[1], r))
    model = copy.deepcopy(sharp_model)
    model.generation_config.eos_token_id = produced.most_common(1)[0][0]
    return model


def _decoder(model: Any, tokenizer: Any, rows: int) -> GreedyDecoder:
    return GreedyDecoder(model, eos=[model.generation_config.eos_token_id], rows_in_flight=rows,
                         decode=lambda t: tokenizer.decode(t, skip_special_tokens=True))


@pytest.mark.parametrize("rows", [1, 2, 3, 16])
def test_tokens_match_plain_generate_whatever_the_rows_in_flight(tiny_parts: Any, stopping_model: Any,
                                                                 rows: int) -> None:
    _, tokenizer = tiny_parts
    expected = [_plain(stopping_model, tokenizer, r) for r in REQUESTS]
    ended = [len(e) < r.max_new_tokens for e, r in zip(expected, REQUESTS, strict=True)]
    assert any(ended), "no row ended early"
    prompts = [_prompt(tokenizer, r) for r in REQUESTS]
    assert _decoder(stopping_model, tokenizer, rows).run(prompts, REQUESTS) == expected


def test_a_row_stops_at_its_stop_string_with_the_text_plain_generate_gives(tiny_parts: Any,
                                                                          sharp_model: Any) -> None:
    model, tokenizer = sharp_model, tiny_parts[1]
    full = _plain(model, tokenizer, REQUESTS[2])
    text = tokenizer.decode(full, skip_special_tokens=True)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    request = GenerationRequest(REQUESTS[2].prompt, max_new_tokens=12, until=(stop,))
    [tokens] = _decoder(model, tokenizer, 4).run([_prompt(tokenizer, request)], [request])
    assert len(tokens) < len(full) and full[: len(tokens)] == tokens
    assert cut_at_stops(tokenizer.decode(tokens), (stop,)) == cut_at_stops(text, (stop,))


def test_backend_answers_match_plain_generate_text_for_text(tiny_parts: Any, stopping_model: Any) -> None:
    _, tokenizer = tiny_parts
    backend = TransformersBackend(stopping_model, tokenizer, name="t", batch_size=2, generation_tokens=1)
    expected = [tokenizer.decode(_plain(stopping_model, tokenizer, r), skip_special_tokens=True).strip()
                for r in REQUESTS]
    assert backend.generate(REQUESTS) == expected
    assert backend.generate([]) == []


def test_rows_in_flight_follow_the_token_budget_never_below_the_batch_size(tiny_parts: Any) -> None:
    model, tokenizer = tiny_parts
    backend = TransformersBackend(model, tokenizer, name="t", batch_size=4, generation_tokens=1000)
    prompts = [[1] * 40, [1] * 10]
    requests = [GenerationRequest("a", max_new_tokens=10), GenerationRequest("b", max_new_tokens=5)]
    assert backend.rows_in_flight(prompts, requests) == 1000 // 50
    backend.generation_tokens = 10
    assert backend.rows_in_flight(prompts, requests) == 4


def test_a_request_for_no_tokens_gets_none(tiny_parts: Any, sharp_model: Any) -> None:
    model, tokenizer = sharp_model, tiny_parts[1]
    requests = [GenerationRequest("Hi", max_new_tokens=0), REQUESTS[0]]
    tokens = _decoder(model, tokenizer, 2).run([_prompt(tokenizer, r) for r in requests], requests)
    assert tokens[0] == [] and tokens[1] == _plain(model, tokenizer, REQUESTS[0])


class _RowLimited:
    """The tiny model behind a memory limit: more than `rows` rows in one pass is out of memory,
    as a GPU reports it (the CPU here has room for any of these)."""

    def __init__(self, model: Any, rows: int) -> None:
        self.model, self.rows, self.refused = model, rows, 0
        self.config, self.generation_config = model.config, model.generation_config

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def eval(self) -> _RowLimited:
        return self

    def forward(self, input_ids: Any, cache: Any = None, **kwargs: Any) -> Any:
        if input_ids.shape[0] > self.rows:
            self.refused += 1
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(input_ids=input_ids, cache=cache, **kwargs)

    __call__ = forward


def test_out_of_memory_halves_the_rows_in_flight_and_loses_nothing(tiny_parts: Any,
                                                                   stopping_model: Any) -> None:
    _, tokenizer = tiny_parts
    limited = _RowLimited(stopping_model, rows=3)
    backend = TransformersBackend(limited, tokenizer, name="t", batch_size=7, generation_tokens=1)
    expected = TransformersBackend(stopping_model, tokenizer, name="t").generate(REQUESTS)
    assert backend.generate(REQUESTS) == expected
    assert limited.refused == 1  # 7 rows in one pass refused, then 3 at a time answered everything
    limited.rows = 0
    with pytest.raises(BackendError) as caught:
        backend.generate(REQUESTS)
    assert caught.value.kind == "oom"


def test_prompts_that_share_no_prefix_and_one_that_is_a_single_token(tiny_parts: Any,
                                                                     stopping_model: Any) -> None:
    prompts = [[40, 41, 42, 43, 44], [50, 51], [60]]
    requests = [GenerationRequest("", max_new_tokens=n) for n in (6, 9, 4)]
    expected = [_plain_ids(stopping_model, p, r.max_new_tokens)
                for p, r in zip(prompts, requests, strict=True)]
    assert _decoder(stopping_model, tiny_parts[1], 3).run(prompts, requests) == expected
    # one prompt alone: all of it but its last token is the "shared" prefix
    assert _decoder(stopping_model, tiny_parts[1], 3).run(prompts[:1], requests[:1]) == expected[:1]
