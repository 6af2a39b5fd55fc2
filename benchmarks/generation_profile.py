"""Where generation time goes, in process: plain batched `generate` against the continuous batch,
and the bound the hardware sets on one decoding step. Used by benchmarks/generation.py."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from engine import items

from monitor.probing.backends.base import GenerationRequest
from monitor.probing.backends.greedy import GreedyDecoder
from monitor.probing.backends.transformers import TransformersBackend

MAX_NEW = 32


def _requests(limit: int | None) -> list[GenerationRequest]:
    return [GenerationRequest(f"{i['question']} Answer in a few words.", MAX_NEW) for i in items()[:limit]]


def _prompts(backend: TransformersBackend, requests: list[GenerationRequest]) -> list[list[int]]:
    return list(backend.tokenizer.apply_chat_template([backend._messages(r) for r in requests],
                                                      add_generation_prompt=True, tokenize=True,
                                                      return_dict=True)["input_ids"])


def plain_generate(backend: TransformersBackend, requests: list[GenerationRequest],
                   batch: int) -> dict[str, Any]:
    """What the backend ran before: left-padded chunks of `batch`, each run to its longest answer."""
    import torch

    tokenizer, eos = backend.tokenizer, backend._eos()
    tokenizer.padding_side = "left"
    counts = {"steps": 0, "row_steps": 0, "useful": 0, "prompt_tokens": 0}
    tokens: list[list[int]] = []
    began = time.perf_counter()
    for start in range(0, len(requests), batch):
        chunk = requests[start : start + batch]
        encoded = tokenizer.apply_chat_template(
            [backend._messages(r) for r in chunk], add_generation_prompt=True, tokenize=True,
            padding=True, return_dict=True, return_tensors="pt")
        with torch.inference_mode():
            out = backend.model.generate(**encoded, do_sample=False, max_new_tokens=MAX_NEW, top_k=None,
                                         pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None)
        new = out[:, encoded["input_ids"].shape[1] :].tolist()
        for row in new:
            ended = next((i for i, t in enumerate(row) if t in eos), None)
            tokens.append(row[:ended])
            counts["useful"] += len(row) if ended is None else ended + 1
        counts["steps"] += len(new[0])
        counts["row_steps"] += len(new[0]) * len(chunk)
        counts["prompt_tokens"] += int(encoded["input_ids"].numel())
    return _figures(tokens, time.perf_counter() - began, counts)


class _Counting(GreedyDecoder):
    """The continuous batch, counting its forward passes and the rows they carry."""

    counts: dict[str, int]

    def _forward(self, ids: Any, positions: Any, mask: Any, kv: Any) -> Any:
        prompt = ids.shape[1] > 1  # the shared prefix or a refill; a decoding step is one column
        self.counts["steps"] += 1
        if prompt:
            self.counts["prompt_tokens"] += int(ids.numel())
        else:
            self.counts["row_steps"] += int(ids.shape[0])
        return super()._forward(ids, positions, mask, kv)


def continuous(backend: TransformersBackend, requests: list[GenerationRequest]) -> dict[str, Any]:
    """The backend's own path, chunked as the prober chunks it."""
    tokens: list[list[int]] = []
    counts = {"steps": 0, "row_steps": 0, "prompt_tokens": 0}
    began, rows = time.perf_counter(), 0
    for start in range(0, len(requests), backend.chunk_size):
        chunk = requests[start : start + backend.chunk_size]
        prompts = _prompts(backend, chunk)
        rows = backend.rows_in_flight(prompts, chunk)
        decoder = _Counting(backend.model, eos=backend._eos(), decode=backend._text, rows_in_flight=rows)
        decoder.counts = counts
        tokens += decoder.run(prompts, chunk)
    figures = _figures(tokens, time.perf_counter() - began, {**counts, "useful": counts["row_steps"]})
    return {**figures, "rows_in_flight": rows}


def _figures(tokens: list[list[int]], seconds: float, counts: dict[str, int]) -> dict[str, Any]:
    answer = sum(len(t) for t in tokens)
    return {"seconds": seconds, "items_per_s": len(tokens) / seconds,
            "answer_tokens_per_s": answer / seconds, "steps": counts["steps"],
            "row_steps": counts["row_steps"], "idle_row_steps": counts["row_steps"] - counts["useful"],
            "prompt_tokens": counts["prompt_tokens"], "tokens": tokens}


def profile(model: Path, batch: int, limit: int | None) -> dict[str, Any]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    backend = TransformersBackend.load(str(model), device="cpu", dtype="float32", batch_size=batch)
    requests = _requests(limit)
    before = plain_generate(backend, requests, batch)
    after = continuous(backend, requests)
    budget, backend.generation_tokens = backend.generation_tokens, 1  # rows in flight: batch_size
    at_batch = continuous(backend, requests)
    backend.generation_tokens = budget
    expected = before.pop("tokens")
    both = zip(expected, after.pop("tokens"), at_batch.pop("tokens"), strict=True)
    same = sum(a == b == c for a, b, c in both)
    print(f"in process: plain {before['items_per_s']:.2f} items/s, continuous {after['items_per_s']:.2f} "
          f"items/s ({at_batch['items_per_s']:.2f} at {batch} rows), same tokens {same}/{len(requests)}",
          flush=True)
    return {"items": len(requests), "identical_tokens": same, "plain_generate": before, "continuous": after,
            "continuous_16": at_batch}


def _best(call: Any, repeats: int = 5) -> float:
    call()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return min(times)


def hardware(model: Path) -> dict[str, Any]:
    """Measured bandwidth and matmul rate, and one decoding step against the bound they set."""
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    big = torch.ones(256 * 1024 * 1024)
    read_gb_s = big.numel() * 4 / _best(big.sum) / 1e9
    del big
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    matmul = 2 * 2048**3 / _best(lambda: a @ b) / 1e9
    lm = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32).eval()
    params = sum(p.numel() for p in lm.parameters())
    weight_bytes = params * 4
    arg = GreedyDecoder(lm, eos=[], decode=str)._cache_arg
    steps = []
    with torch.inference_mode():
        for rows in (1, 16, 64, 128):
            cache = DynamicCache()
            prompt = torch.randint(100, 1000, (rows, 60))
            lm(input_ids=prompt, use_cache=True, logits_to_keep=1, **{arg: cache})
            last = torch.randint(100, 1000, (rows, 1))

            def step(cache: DynamicCache = cache, last: Any = last) -> None:
                lm(input_ids=last, use_cache=True, **{arg: cache})
                cache.crop(-1)

            measured = _best(step) * 1000
            memory, compute = weight_bytes / read_gb_s / 1e6, 2 * params * rows / matmul / 1e6
            steps.append({"rows": rows, "measured_ms": measured, "bound_ms": max(memory, compute),
                          "limit": "reading the weights" if memory >= compute else "matmul FLOPs"})
    return {"weight_bytes": weight_bytes, "params": params, "read_gb_s": read_gb_s, "matmul_gflop_s": matmul,
            "steps": steps}

