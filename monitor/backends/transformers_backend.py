"""In-process backend: a transformers causal LM on CUDA when present, else CPU.

Multiple-choice scoring encodes each question's context once: the context goes through the model
with its key/value cache kept, the cache is copied to one row per choice, and only the choice
tokens run again. lm-evaluation-harness encodes the context once per choice instead; on a
four-choice suite that is most of the work saved. Token boundaries between context and
continuation follow lm-evaluation-harness exactly (trailing spaces move to the continuation;
the continuation is what encoding the whole string adds after the context), so the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from monitor.backends.base import (
    BackendInfo,
    GenerationRequest,
    LoglikelihoodRequest,
    RollingResult,
    cut_at_stops,
)
from monitor.errors import BackendError, MissingExtra

if TYPE_CHECKING:
    import torch

_MAX_LENGTH_CAP = 2048


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingExtra("torch", "model") from exc
    return torch


def pick_device(requested: str = "auto") -> str:
    torch = _torch()
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(requested: str, device: str) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls there are slow and noisy); bf16 on GPUs that support it."""
    torch = _torch()
    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class TransformersBackend:
    """Wraps a loaded model and tokenizer; build one with `load` or from objects in tests."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str, batch_size: int = 16) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.batch_size = batch_size
        device = str(next(model.parameters()).device)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self._info = BackendInfo(kind="transformers", model=name, device=device, dtype=dtype)
        limit = getattr(model.config, "max_position_embeddings", _MAX_LENGTH_CAP)
        self.max_length = min(limit or _MAX_LENGTH_CAP, _MAX_LENGTH_CAP)

    @classmethod
    def load(cls, path: str, *, device: str = "auto", dtype: str = "auto",
             batch_size: int = 16) -> TransformersBackend:
        try:
            import transformers
        except ImportError as exc:
            raise MissingExtra("transformers", "model") from exc
        chosen = pick_device(device)
        try:
            auto_model: Any = transformers.AutoModelForCausalLM
            tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            model = auto_model.from_pretrained(path, dtype=pick_dtype(dtype, chosen))
            model.to(chosen)
        except (OSError, ValueError, RuntimeError) as exc:
            raise BackendError(f"cannot load model from {path}: {exc}", kind="load") from exc
        return cls(model, tokenizer, name=str(path), batch_size=batch_size)

    @property
    def info(self) -> BackendInfo:
        return self._info

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    # -- log-likelihood -------------------------------------------------------------------

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-evaluation-harness's split of one (context, continuation) into tokens."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            continuation = context[-spaces:] + continuation
            context = context[:-spaces]
        whole = self._encode(context + continuation)
        context_ids = self._encode(context) or [self._prefix_token()]
        return context_ids, whole[len(context_ids) :] if context else whole

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prefix_token(self) -> int:
        tok = self.tokenizer
        return int(tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[list[float]]:
        results: list[list[float]] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            results += self._guarded(self._loglikelihood_batch, chunk)
        return results

    def _loglikelihood_batch(self, requests: Sequence[LoglikelihoodRequest]) -> list[list[float]]:
        torch = _torch()
        encoded = [self._encode_request(r) for r in requests]
        contexts = [ctx for ctx, _ in encoded]
        rows = [(q, cont) for q, (_, conts) in enumerate(encoded) for cont in conts]
        with torch.inference_mode():
            first, cache, ctx_mask, ctx_lens = self._run_contexts(contexts)
            scores = [float(first[q, cont[0]]) for q, cont in rows]
            if any(len(cont) > 1 for _, cont in rows):
                rest = self._run_continuations(rows, cache, ctx_mask, ctx_lens)
                scores = [a + b for a, b in zip(scores, rest, strict=True)]
        out, i = [], 0
        for _, conts in encoded:
            out.append(scores[i : i + len(conts)])
            i += len(conts)
        return out

    def _encode_request(self, request: LoglikelihoodRequest) -> tuple[list[int], list[list[int]]]:
        pairs = [self.encode_pair(request.context, c) for c in request.continuations]
        context = pairs[0][0]
        conts = [cont for _, cont in pairs]
        if any(not cont for cont in conts):
            raise BackendError("a continuation encodes to no tokens", kind="tokenization")
        longest = max(len(c) for c in conts)
        return context[-(self.max_length - longest) :], conts

    def _run_contexts(self, contexts: list[list[int]]) -> tuple[Any, Any, Any, Any]:
        """One forward pass over the contexts; returns next-token log-probs and the cache."""
        torch = _torch()
        ids, mask = self._right_pad(contexts)
        lengths = mask.sum(dim=1)
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=True)
        last = out.logits[torch.arange(len(contexts)), lengths - 1].float()
        return torch.log_softmax(last, dim=-1), out.past_key_values, mask, lengths

    def _run_continuations(self, rows: list[tuple[int, list[int]]], cache: Any, ctx_mask: Any,
                           ctx_lens: Any) -> list[float]:
        """Feed every choice's tokens after its own question's cached context."""
        torch = _torch()
        owner = torch.tensor([q for q, _ in rows], device=self.device)
        cache.batch_select_indices(owner)
        ids, mask = self._right_pad([cont for _, cont in rows])
        positions = ctx_lens[owner].unsqueeze(1) + torch.arange(ids.shape[1], device=self.device)
        out = self.model(
            input_ids=ids,
            attention_mask=torch.cat([ctx_mask[owner], mask], dim=1),
            position_ids=positions,
            past_key_values=cache,
            use_cache=False,
        )
        logprobs = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
        picked = logprobs.gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        return (picked * mask[:, 1:]).sum(dim=1).tolist()

    def _right_pad(self, sequences: list[list[int]]) -> tuple[Any, Any]:
        torch = _torch()
        width = max(len(s) for s in sequences)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- rolling log-likelihood (perplexity) ----------------------------------------------

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[RollingResult]:
        results: list[RollingResult] = []
        for start in range(0, len(texts), self.batch_size):
            results += self._guarded(self._rolling_batch, texts[start : start + self.batch_size])
        return results

    def _rolling_batch(self, texts: Sequence[str]) -> list[RollingResult]:
        """Each text is scored from a prefix token, in windows of at most max_length tokens."""
        windows: list[tuple[int, list[int]]] = []
        for index, text in enumerate(texts):
            tokens = [self._prefix_token(), *self._encode(text)]
            step = self.max_length
            for start in range(0, len(tokens) - 1, step):
                windows.append((index, tokens[start : start + step + 1]))
        totals = [0.0] * len(texts)
        for (index, _), value in zip(windows, self._sequence_logprobs([w for _, w in windows]),
                                     strict=True):
            totals[index] += value
        return [RollingResult(totals[i], len(self._encode(t))) for i, t in enumerate(texts)]

    def _sequence_logprobs(self, sequences: list[list[int]]) -> list[float]:
        torch = _torch()
        ids, mask = self._right_pad(sequences)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            picked = torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:].unsqueeze(-1))
        return (picked.squeeze(-1) * mask[:, 1:]).sum(dim=1).tolist()

    # -- generation -----------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        results: list[str] = []
        for start in range(0, len(requests), self.batch_size):
            results += self._guarded(self._generate_batch, requests[start : start + self.batch_size])
        return results

    def _generate_batch(self, requests: Sequence[GenerationRequest]) -> list[str]:
        torch = _torch()
        conversations = [self._messages(r) for r in requests]
        self.tokenizer.padding_side = "left"
        batch = self.tokenizer.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, padding=True,
            return_dict=True, return_tensors="pt",
        ).to(self.device)
        longest = max(r.max_new_tokens for r in requests)
        with torch.inference_mode():
            out = self.model.generate(
                **batch, do_sample=False, max_new_tokens=longest,
                pad_token_id=self.tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
            )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        return [self._decode(tokens, r) for tokens, r in zip(new_tokens, requests, strict=True)]

    def _decode(self, tokens: Any, request: GenerationRequest) -> str:
        text = self.tokenizer.decode(tokens[: request.max_new_tokens], skip_special_tokens=True)
        return cut_at_stops(text, request.until).strip()

    @staticmethod
    def _messages(request: GenerationRequest) -> list[dict[str, str]]:
        system = [{"role": "system", "content": request.system_prompt}] if request.system_prompt else []
        return [*system, {"role": "user", "content": request.prompt}]

    # -- errors ---------------------------------------------------------------------------

    def _guarded(self, call: Any, chunk: Any) -> list[Any]:
        """Turn out-of-memory and similar runtime failures into a BackendError (a measurement error)."""
        try:
            return list(call(chunk))
        except BackendError:
            raise
        except (RuntimeError, ValueError, IndexError) as exc:
            kind = "oom" if "out of memory" in str(exc).lower() else "runtime"
            raise BackendError(f"{type(exc).__name__}: {exc}", kind=kind) from exc
