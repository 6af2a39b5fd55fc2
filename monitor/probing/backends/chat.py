"""A chat prompt's token ids, rendered by the server's own chat template.

Scoring an answer's opening over HTTP needs the exact tokens the server puts before the answer
when a user asks through `/v1/chat/completions`. The server knows its template, so it is asked:

- vLLM: `POST /tokenize` with `messages` and `add_generation_prompt` answers the token ids
  (tokenized as its chat completions tokenize them: no special tokens added to the template's).
- llama.cpp (`llama-server`): `POST /apply-template` answers the rendered text, which the
  backend's tokenizer then encodes (special tokens in the text are read as such).

A server with neither route cannot render the prompt the way its users are asked, and says so
(`unsupported`): the measurement is an error, never a guess at the template.
"""

from __future__ import annotations

from typing import Any

from monitor.errors import BackendError
from monitor.probing.backends.endpoint import Endpoint
from monitor.probing.backends.tokens import Tokenizer
from monitor.vocabulary import ErrorKind

Messages = list[dict[str, str]]
_MISSING = (ErrorKind.NOT_FOUND, ErrorKind.REJECTED)  # how a server without the route answers
NOT_SUPPORTED = (
    "renders no chat template for scoring (neither vLLM's /tokenize with messages nor "
    "llama.cpp's /apply-template): safety depth is not supported by this server"
)


def messages(prompt: str, system_prompt: str | None) -> Messages:
    """One user turn, with the suite's system prompt where it has one (as generation sends it)."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": prompt}]


class ChatTemplate:
    """The server's chat template, reached by whichever route it has (found once, then kept)."""

    def __init__(self, endpoint: Endpoint, tokenizer: Tokenizer) -> None:
        self.endpoint = endpoint
        self.tokenizer = tokenizer
        self._route: str | None = None

    def prompt_ids(self, model: str, chat: Messages) -> list[int]:
        """The token ids of `chat` up to where the assistant's answer begins."""
        if self._route != "apply-template":
            found = self._tokenized(model, chat)
            if found is not None:
                self._route = "tokenize"
                return found
        text = self._applied(chat)
        self._route = "apply-template"
        return self.tokenizer.encode(text)

    def _tokenized(self, model: str, chat: Messages) -> list[int] | None:
        """vLLM's answer; None where the server has no such route (llama.cpp answers an empty
        list to a body without `content`)."""
        payload = {
            "model": model,
            "messages": chat,
            "add_generation_prompt": True,
            "add_special_tokens": False,
        }
        try:
            body = self.endpoint.post("/tokenize", payload, root=True)
        except BackendError as exc:
            if exc.kind not in _MISSING:
                raise
            return None
        return _token_ids(body.get("tokens"))

    def _applied(self, chat: Messages) -> str:
        try:
            body = self.endpoint.post("/apply-template", {"messages": chat}, root=True)
        except BackendError as exc:
            if exc.kind not in _MISSING:
                raise
            raise BackendError(f"{self.endpoint.root} {NOT_SUPPORTED}", kind=ErrorKind.UNSUPPORTED) from exc
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise BackendError(
                f"{self.endpoint.root}: /apply-template answered no prompt text",
                kind=ErrorKind.INVALID_RESPONSE,
            )
        return prompt


def _token_ids(tokens: Any) -> list[int] | None:
    if not isinstance(tokens, list) or not tokens:
        return None
    if not all(isinstance(t, int) for t in tokens):
        return None
    return tokens
