"""In-process backend: a transformers causal LM on CUDA when present, else CPU.

Multiple-choice scoring packs a batch of questions and all their choices into one token trie and
runs it in one forward pass (see `pack.Pack`): each context is encoded once for all its choices, and
questions that start alike share their common tokens. lm-evaluation-harness runs each context
once per choice instead. Token boundaries between context and
continuation follow lm-evaluation-harness exactly (trailing spaces move to the continuation;
the continuation is what encoding the whole string adds after the context), so the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.errors import BackendError, ForgetmenotError, MissingExtra
from monitor.probing.backends.base import (
    BackendInfo,
    GenerationRequest,
    LoglikelihoodRequest,
    OpeningRequest,
    RollingResult,
    cut_at_stops,
)
from monitor.probing.backends.greedy import GreedyDecoder
from monitor.probing.backends.pack import Pack
from monitor.probing.backends.tokens import (
    LocalTokenizer,
    Tokenizer,
    fit_context,
    rolling_windows,
    split_pair,
    transformers_tokenizer,
)
from monitor.vocabulary import ErrorKind

if TYPE_CHECKING:
    import torch

_MAX_LENGTH_CAP = 2048
_BATCHES_PER_CHUNK = 8
GENERATION_TOKENS = 8192  # prompt and answer tokens in flight: 0.4 GB of cache for SmolLM2-135M


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
    """Wraps a loaded model and tokenizer; build one with `load` or from objects in tests.

    Scoring encodes through `encoder` (by default the transformers tokenizer itself); `load`
    gives it the `tokenizers` library reading `tokenizer.json`, the same tokenizer without
    transformers' 1.4 s of loading, and loads transformers' tokenizer only when generation
    needs its chat template (`load_tokenizer`)."""

    def __init__(self, model: Any, tokenizer: Any = None, *, name: str, batch_size: int = 16,
                 encoder: Tokenizer | None = None, load_tokenizer: Callable[[], Any] | None = None,
                 generation_tokens: int = GENERATION_TOKENS) -> None:
        self.model = model.eval()
        if tokenizer is not None:
            self.__dict__["tokenizer"] = _with_pad(tokenizer)
        self._load_tokenizer = load_tokenizer
        self.encoder: Tokenizer = encoder or _TransformersEncoder(self.tokenizer)
        self.batch_size = batch_size
        self.generation_tokens = generation_tokens
        device = str(next(model.parameters()).device)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self._info = BackendInfo(kind="transformers", model=name, device=device, dtype=dtype)
        limit = getattr(model.config, "max_position_embeddings", _MAX_LENGTH_CAP)
        self.max_length = min(limit or _MAX_LENGTH_CAP, _MAX_LENGTH_CAP)

    @classmethod
    def load(cls, path: str, *, device: str = "auto", dtype: str = "auto",
             batch_size: int = 16, generation_tokens: int = GENERATION_TOKENS) -> TransformersBackend:
        try:
            import transformers
        except ImportError as exc:
            raise MissingExtra("transformers", "model") from exc
        chosen = pick_device(device)
        try:
            auto_model: Any = transformers.AutoModelForCausalLM
            encoder = LocalTokenizer(path) if (Path(path) / "tokenizer.json").is_file() else None
            model = auto_model.from_pretrained(path, dtype=pick_dtype(dtype, chosen))
            model.to(chosen)
        except ForgetmenotError:
            raise
        except Exception as exc:  # weights come from outside: whatever reading them raises (a pickle
            # torch refuses is an UnpicklingError) means they will not load, never a stuck version
            raise BackendError(f"cannot load model from {path}: {exc}", kind=ErrorKind.LOAD) from exc
        return cls(model, name=str(path), batch_size=batch_size, encoder=encoder,
                   load_tokenizer=lambda: transformers_tokenizer(path), generation_tokens=generation_tokens)

    @cached_property
    def tokenizer(self) -> Any:
        """transformers' tokenizer, loaded on first use (generation's chat template)."""
        if self._load_tokenizer is None:
            raise BackendError("this backend was built without a tokenizer", kind=ErrorKind.LOAD)
        return _with_pad(self._load_tokenizer())

    @property
    def chunk_size(self) -> int:
        """Several batches per call: generation keeps its continuous batch full across them, and
        scoring packs the call's questions `batch_size` at a time."""
        return self.batch_size * _BATCHES_PER_CHUNK

    def close(self) -> None:
        """Hand a GPU's cached blocks back: a retraining or another version may load next."""
        import torch

        if self._info.device.startswith("cuda"):
            torch.cuda.empty_cache()

    @property
    def _attention(self) -> str | None:
        return getattr(self.model.config, "_attn_implementation", None)

    @property
    def info(self) -> BackendInfo:
        return self._info

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    # -- log-likelihood -------------------------------------------------------------------

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return split_pair(self._encode, self._prefix_token(), context, continuation)

    def _encode(self, text: str) -> list[int]:
        return self.encoder.encode(text)

    def _prefix_token(self) -> int:
        return self.encoder.prefix_token()

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[list[float]]:
        """Questions are packed in token order, so those that start alike share a pack."""
        encoded = self._guarded(lambda rs: [self._encode_request(r) for r in rs], requests)
        order = sorted(range(len(encoded)), key=lambda i: encoded[i][0])
        results: list[list[float]] = [[] for _ in encoded]
        for start in range(0, len(order), self.batch_size):
            picked = order[start : start + self.batch_size]
            scored = self._guarded(self._loglikelihood_pack, [encoded[i] for i in picked])
            for index, scores in zip(picked, scored, strict=True):
                results[index] = scores
        return results

    def _encode_request(self, request: LoglikelihoodRequest) -> tuple[list[int], list[list[int]]]:
        pairs = [self.encode_pair(request.context, c) for c in request.continuations]
        context = pairs[0][0]
        conts = [cont for _, cont in pairs]
        if any(not cont for cont in conts):
            raise BackendError("a continuation encodes to no tokens", kind=ErrorKind.TOKENIZATION)
        return fit_context(context, conts, self.max_length), conts

    def _loglikelihood_pack(self, encoded: Sequence[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        """One forward pass for a whole batch of questions, without padding."""
        torch = _torch()
        pack = Pack.build(encoded)
        with torch.inference_mode():
            owners = pack.tensor([owner for _, _, owner in pack.scored], self.device)
            totals = torch.zeros(sum(pack.shape), dtype=torch.float64, device=self.device)
            totals.index_add_(0, owners, self._scored_tokens(pack))
        flat = totals.tolist()
        out_scores, i = [], 0
        for width in pack.shape:
            out_scores.append(flat[i : i + width])
            i += width
        return out_scores

    def _scored_tokens(self, pack: Pack) -> Any:
        """The log-probability of every scored token of `pack`, in `pack.scored` order (float64)."""
        torch = _torch()
        with torch.inference_mode():
            out = self.model(
                input_ids=pack.tensor(pack.ids, self.device)[None],
                position_ids=pack.tensor(pack.positions, self.device)[None],
                attention_mask=pack.mask(self.device, self._attention, self.model.dtype),
                logits_to_keep=pack.tensor(pack.keep, self.device), use_cache=False,
            )
            logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
            rows = pack.tensor([row for row, _, _ in pack.scored], self.device)
            tokens = pack.tensor([token for _, token, _ in pack.scored], self.device)
            return logprobs[rows, tokens].double()

    # -- openings (safety depth) ----------------------------------------------------------

    def opening_logprobs(self, requests: Sequence[OpeningRequest]) -> list[list[float]]:
        """Each answer's opening after its chat prompt, per token, through the same packed
        forward pass as multiple choice: prompts that share a system prompt share its tokens."""
        if not requests:
            return []
        encoded = self._guarded(self._encode_openings, requests)
        results: list[list[float]] = []
        for start in range(0, len(encoded), self.batch_size):
            results += self._guarded(self._opening_pack, encoded[start : start + self.batch_size])
        return results

    def _encode_openings(self, requests: Sequence[OpeningRequest]) -> list[tuple[list[int], list[list[int]]]]:
        encoded = []
        for prompt, request in zip(self._chat_prompts(requests), requests, strict=True):
            opening = self._encode(request.answer)[: request.tokens]
            if not opening:
                raise BackendError("an answer encodes to no tokens", kind=ErrorKind.TOKENIZATION)
            encoded.append((fit_context(prompt, [opening], self.max_length), [opening]))
        return encoded

    def _opening_pack(self, encoded: Sequence[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        flat = self._scored_tokens(Pack.build(encoded)).tolist()
        per_request, i = [], 0
        for _, (opening,) in encoded:
            per_request.append(flat[i : i + len(opening)])
            i += len(opening)
        return per_request

    def _pad(self, sequences: list[list[int]]) -> tuple[Any, Any]:
        """Right-padded ids and attention mask; the padding is masked, so any real token will do."""
        torch = _torch()
        width = max(len(s) for s in sequences)
        pad = self._prefix_token()
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
            windows += [(index, w) for w in rolling_windows(tokens, self.max_length)]
        totals = [0.0] * len(texts)
        for (index, _), value in zip(windows, self._sequence_logprobs([w for _, w in windows]),
                                     strict=True):
            totals[index] += value
        return [RollingResult(totals[i], len(self._encode(t))) for i, t in enumerate(texts)]

    def _sequence_logprobs(self, sequences: list[list[int]]) -> list[float]:
        torch = _torch()
        ids, mask = self._pad(sequences)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            picked = torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:].unsqueeze(-1))
        return (picked.squeeze(-1) * mask[:, 1:]).sum(dim=1).tolist()

    # -- generation -----------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """All of a chunk's prompts go to one continuous batch (see `greedy.GreedyDecoder`)."""
        return self._guarded(self._generate_all, requests) if requests else []

    def _generate_all(self, requests: Sequence[GenerationRequest]) -> list[str]:
        prompts = self._chat_prompts(requests)
        tokens = self._decode_halving(prompts, requests, self.rows_in_flight(prompts, requests))
        return [cut_at_stops(self._text(t), r.until).strip() for t, r in zip(tokens, requests, strict=True)]

    def _decode_halving(self, prompts: list[list[int]], requests: Sequence[GenerationRequest],
                        rows: int) -> list[list[int]]:
        """Out of memory with many rows in flight, try again with half as many before giving up:
        greedy tokens do not depend on the rows beside them, and the chunk is not lost."""
        while True:
            decoder = GreedyDecoder(self.model, eos=self._eos(), decode=self._text, rows_in_flight=rows)
            try:
                return decoder.run(prompts, requests)
            except RuntimeError as exc:
                if "out of memory" not in str(exc).lower() or rows <= 1:
                    raise
                rows //= 2
                self.close()

    def rows_in_flight(self, prompts: Sequence[list[int]], requests: Sequence[GenerationRequest]) -> int:
        """As many rows as `generation_tokens` holds at the longest prompt and answer, at least
        `batch_size`: a decoding step reads every weight once however many rows it carries."""
        longest = max(len(p) for p in prompts) + max(r.max_new_tokens for r in requests)
        return max(self.batch_size, self.generation_tokens // max(longest, 1))

    def _eos(self) -> list[int]:
        """The tokens plain `generate` stops at: the generation config's, else the tokenizer's."""
        config = getattr(self.model, "generation_config", None)
        eos = getattr(config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [] if eos is None else [int(e) for e in (eos if isinstance(eos, list) else [eos])]

    def _text(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def _chat_prompts(self, requests: Sequence[GenerationRequest | OpeningRequest]) -> list[list[int]]:
        """Each prompt's token ids as generation asks it: up to where the assistant's answer begins."""
        rendered = self.tokenizer.apply_chat_template(
            [self._messages(r) for r in requests], add_generation_prompt=True, tokenize=True,
            return_dict=True)["input_ids"]
        return [list(ids) for ids in rendered]

    @staticmethod
    def _messages(request: GenerationRequest | OpeningRequest) -> list[dict[str, str]]:
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
            kind = ErrorKind.OOM if "out of memory" in str(exc).lower() else ErrorKind.RUNTIME
            raise BackendError(f"{type(exc).__name__}: {exc}", kind=kind) from exc


def _with_pad(tokenizer: Any) -> Any:
    """Batched generation pads on the left; a tokenizer without a pad token pads with its end token."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class _TransformersEncoder:
    """transformers' tokenizer as a `Tokenizer`: what a backend built from objects encodes with."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def prefix_token(self) -> int:
        bos, eos = self._tokenizer.bos_token_id, self._tokenizer.eos_token_id
        return int(bos if bos is not None else eos)
