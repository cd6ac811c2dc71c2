"""Character-level tokenizer of microgpt.

The sorted unique characters of the corpus get ids 0..n-1. Plain mode: BOS = n, vocab n + 1.
Chat mode: user = n, assistant = n + 1, end_turn = n + 2, BOS = n + 3, vocab n + 4.
A document is [BOS, chars..., BOS]; a conversation is [BOS, (role, text..., end_turn)*, BOS].
"""

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence

from jaxsys.errors import ConfigError, DataError

SPECIAL_TOKENS = ["user", "assistant", "end_turn"]


def describe_chars(chars: Sequence[str], limit: int = 20) -> str:
    """'U+1F600 '😀', U+00E9 'é', U+D800' (lone surrogates and control characters by code point only;
    the text stays encodable as UTF-8)."""
    parts = []
    for c in chars[:limit]:
        shown = c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF
        parts.append(f"U+{ord(c):04X}" + (f" {c!r}" if shown else ""))
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return ", ".join(parts) + more


class Tokenizer:
    """Character-level tokenizer; `chars` are single-character strings (sorted order is the id order)."""

    def __init__(self, chars: Sequence[str], chat: bool = False):
        chars = list(chars)
        for i, c in enumerate(chars):
            if not isinstance(c, str) or len(c) != 1:
                raise DataError(f"tokenizer chars[{i}] must be a single-character string, got {c!r}")
        if len(set(chars)) != len(chars):
            dup = sorted(c for c, k in Counter(chars).items() if k > 1)  # linear: meta.json may be hostile
            raise DataError(f"tokenizer chars contain duplicates: {dup!r}")
        self.chars = chars
        self.chat = bool(chat)
        n = len(chars)
        self._stoi = {c: i for i, c in enumerate(chars)}
        if self.chat:
            self.user, self.assistant, self.end_turn, self.bos = n, n + 1, n + 2, n + 3
            self.vocab_size = n + 4
        else:
            self.user = self.assistant = self.end_turn = None
            self.bos = n
            self.vocab_size = n + 1

    def __repr__(self) -> str:
        return f"Tokenizer(n_chars={len(self.chars)}, chat={self.chat}, vocab_size={self.vocab_size})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and self.chars == other.chars and self.chat == other.chat

    @classmethod
    def from_corpus(cls, text: str, chat: bool = False) -> "Tokenizer":
        """Tokenizer over the sorted unique characters of `text`."""
        if not isinstance(text, str):
            raise DataError(f"from_corpus expects str text, got {type(text).__name__}")
        if not text:
            raise DataError("from_corpus: the corpus is empty")
        return cls(sorted(set(text)), chat=chat)

    def encode(self, text: str) -> list[int]:
        """Character ids of `text`; characters outside the vocabulary are dropped with a warning."""
        if isinstance(text, (bytes, bytearray)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"text is not valid UTF-8: {e}") from None
        ids, unknown = [], []
        for c in text:
            i = self._stoi.get(c)
            if i is None:
                unknown.append(c)
            else:
                ids.append(i)
        if unknown:
            shown = "".join(sorted(set(unknown)))
            warnings.warn(f"dropped {len(unknown)} unknown character(s) not in the vocabulary: {shown!r}", stacklevel=2)
        return ids

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of `text` outside the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._stoi))

    def encode_known(self, text: str, where: str = "text") -> list[int]:
        """Character ids of `text`; raises DataError naming every character outside the vocabulary
        (as U+XXXX and, where printable, the character itself). This is what the server (a 400) and
        the chat REPL (an error line) do with such input: the user is told, nothing is dropped."""
        unknown = self.unknown_chars(text)
        if unknown:
            raise DataError(f"{where}: characters not in the model's vocabulary: {describe_chars(unknown)}")
        return [self._stoi[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the character ids; special tokens (BOS, roles, end_turn) are skipped."""
        n = len(self.chars)
        out = []
        for i in ids:
            i = int(i)
            if 0 <= i < n:
                out.append(self.chars[i])
            elif not (n <= i < self.vocab_size):
                raise DataError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
        return "".join(out)

    def encode_document(self, text: str) -> list[int]:
        """[BOS, chars..., BOS]."""
        return [self.bos, *self.encode(text), self.bos]

    def role_id(self, role: str) -> int:
        if not self.chat:
            raise ConfigError("role tokens exist only in chat mode (Tokenizer(chat=True))")
        if role == "user":
            return self.user
        if role == "assistant":
            return self.assistant
        raise DataError(f"unknown conversation role {role!r}; expected 'user' or 'assistant'")

    def encode_conversation(self, turns: Sequence[tuple[str, str]]) -> list[int]:
        """[BOS, (role_id, text..., end_turn)*, BOS] for turns [(role, text), ...]."""
        ids = [self.bos]
        for role, text in turns:
            ids.append(self.role_id(role))
            ids.extend(self.encode(text))
            ids.append(self.end_turn)
        ids.append(self.bos)
        return ids

    def to_meta(self, cfg) -> dict:
        """meta.json contents for a model config `cfg` (a GPTConfig)."""
        if cfg.vocab_size != self.vocab_size:
            raise ConfigError(
                f"config vocab_size={cfg.vocab_size} does not match the tokenizer's vocab_size={self.vocab_size}"
            )
        meta = {
            "vocab_size": int(cfg.vocab_size),
            "n_embd": int(cfg.n_embd),
            "n_head": int(cfg.n_head),
            "n_layer": int(cfg.n_layer),
            "block_size": int(cfg.block_size),
            "chars": list(self.chars),
        }
        if self.chat:
            meta["special_tokens"] = list(SPECIAL_TOKENS)
        return meta

    @classmethod
    def from_meta(cls, meta: dict) -> "Tokenizer":
        """Tokenizer described by meta.json contents (chat mode iff `special_tokens` is present)."""
        if not isinstance(meta, dict):
            raise DataError(f"meta.json must hold an object, got {type(meta).__name__}")
        if "chars" not in meta:
            raise DataError("meta.json has no 'chars' field")
        chars = meta["chars"]
        if not isinstance(chars, list):
            raise DataError(f"meta.json 'chars' must be a list of single-character strings, got {type(chars).__name__}")
        special = meta.get("special_tokens")
        chat = False
        if special is not None:
            if list(special) != SPECIAL_TOKENS:
                raise DataError(f"meta.json special_tokens must be {SPECIAL_TOKENS}, got {special!r}")
            chat = True
        tok = cls(chars, chat=chat)
        if "vocab_size" in meta and meta["vocab_size"] != tok.vocab_size:
            raise DataError(
                f"meta.json vocab_size={meta['vocab_size']} does not match "
                f"{len(chars)} chars + {tok.vocab_size - len(chars)} special tokens "
                f"= {tok.vocab_size}"
            )
        return tok
