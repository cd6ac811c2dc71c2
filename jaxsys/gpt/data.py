"""Training data for the GPT: documents, a continuous corpus, or chat pairs -> fixed-shape batches.

Three modes (`load_data(path, mode, ...)` or `from_text(text, mode, ...)`):

- ``docs``: one document per line (e.g. names); each is ``[BOS, chars..., BOS]``. Split 90/10 by
  documents after a seeded shuffle.
- ``corpus``: one continuous text (e.g. tiny Shakespeare); training windows of ``block_size + 1``
  tokens start at random offsets. Split 90/10 by position (first 90% train, last 10% validation,
  as nanoGPT does), so no window straddles the two.
- ``chat``: a TSV of ``category, prompt, response`` rows (header optional); each row becomes the
  conversation ``[BOS, user, prompt..., end_turn, assistant, response..., end_turn, BOS]``. An
  optional category filter keeps only some categories. Split 90/10 by conversations.

A batch is ``tokens_BxT, targets_BxT, mask_BxT`` with ``targets = tokens shifted by one``; sequences
shorter than ``T`` are padded with token 0 and ``mask = 0`` there, so padding never enters the loss.
``T`` is fixed per data set (``min(block_size, longest sequence - 1)``) so the jitted step compiles
once. The batch of step ``s`` is a pure function of ``(seed, s)``: sequence data are read in
epoch-wise seeded permutations, corpus windows at offsets drawn from ``default_rng([seed, s])``. A
resumed run therefore sees exactly the batches an uninterrupted one would.
"""

import csv
import functools
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt.tokenizer import Tokenizer

MODES = ("docs", "corpus", "chat")
PAD = 0  # token id written into padded positions (masked out of the loss)


class Batch(NamedTuple):
    tokens: np.ndarray  # [B, T] int32 input ids
    targets: np.ndarray  # [B, T] int32 next-token ids
    mask: np.ndarray  # [B, T] float32, 1 where the target counts in the loss


# Data sets shipped in jaxsys/data (licences beside them): name -> (file, its mode)
PACKAGED = {
    "names": ("names.txt", "docs"),  # 32,033 names, MIT (names.LICENSE.md)
    "chat": ("chatterbot_english_pairs.tsv", "chat"),  # chatterbot-corpus pairs, BSD-3
    "shakespeare": ("tinyshakespeare.txt", "corpus"),  # tiny Shakespeare, public domain
}


def default_names_path() -> Path:
    """The names list shipped with the package (jaxsys/data/names.txt, MIT, see names.LICENSE.md)."""
    return packaged_path("names")


def packaged_path(name: str) -> Path:
    """The file of a packaged data set (`PACKAGED`)."""
    if name not in PACKAGED:
        raise ConfigError(f"unknown packaged data {name!r}; packaged: {', '.join(PACKAGED)}")
    return Path(__file__).resolve().parents[1] / "data" / PACKAGED[name][0]


def resolve_data(spec: str | os.PathLike | None, mode: str | None = None) -> tuple[Path, str]:
    """(file, mode) of `--data`: a packaged name (`names`, `chat`, `shakespeare`; None: `names`)
    or a path. `mode` None takes the packaged data's mode, and "docs" for a file."""
    if spec is None or str(spec) in PACKAGED:
        name = "names" if spec is None else str(spec)
        return packaged_path(name), mode or PACKAGED[name][1]
    return Path(spec), mode or "docs"


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of `path`; DataError if it is missing, not a file, or not valid UTF-8."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not path.is_file():
        raise DataError(f"data path is not a file: {path}")
    raw = path.read_bytes()
    return decode_utf8(raw, str(path))


def decode_utf8(raw: bytes, where: str = "<bytes>") -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{where} is not valid UTF-8: byte {e.start} (line {line}) is {raw[e.start : e.start + 1]!r} ({e.reason})"
        ) from None


def parse_documents(text: str) -> list[str]:
    """Non-empty lines, with surrounding whitespace stripped."""
    return [s for s in (line.strip() for line in text.splitlines()) if s]


def parse_chat_pairs(
    text: str, categories: Sequence[str] | None = None, where: str = "<text>"
) -> list[list[tuple[str, str]]]:
    """Conversations [("user", prompt), ("assistant", response)] from TSV rows
    ``category<TAB>prompt<TAB>response``; a first row ``category prompt response`` is a header.
    `categories` keeps only those categories (DataError naming any that do not occur)."""
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    convs, seen = [], set()
    wanted = None if not categories else {c.strip() for c in categories if c.strip()}
    for lineno, row in enumerate(rows, start=1):
        if not row or all(not f.strip() for f in row):
            continue
        if lineno == 1 and [f.strip().lower() for f in row] == ["category", "prompt", "response"]:
            continue
        if len(row) != 3:
            raise DataError(
                f"{where} line {lineno}: expected 3 tab-separated fields (category, prompt, response), got {len(row)}"
            )
        cat, prompt, response = (f.strip() for f in row)
        seen.add(cat)
        if wanted is not None and cat not in wanted:
            continue
        if not prompt or not response:
            continue
        convs.append([("user", prompt), ("assistant", response)])
    if wanted is not None:
        missing = sorted(wanted - seen)
        if missing:
            raise DataError(f"{where}: chat categories {missing} do not occur; available: {sorted(seen)}")
    if not convs:
        raise DataError(f"{where}: no conversations found" + (f" in categories {sorted(wanted)}" if wanted else ""))
    return convs


class SequenceSplit:
    """A split made of separate sequences (documents / conversations), padded to a common length."""

    def __init__(self, seqs: list[list[int]], seq_len: int):
        self.seq_len = seq_len  # T
        self.n = len(seqs)
        self.rows = np.full((self.n, seq_len + 1), PAD, np.int32)
        self.lengths = np.zeros((self.n,), np.int32)  # tokens kept per sequence (<= T + 1)
        for i, s in enumerate(seqs):
            s = s[: seq_len + 1]
            self.rows[i, : len(s)] = s
            self.lengths[i] = len(s)
        self.n_targets = int(np.maximum(self.lengths - 1, 0).sum())

    def __len__(self) -> int:
        return self.n

    @functools.lru_cache(maxsize=4)
    def _perm(self, seed: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch, 0x5E0]).permutation(self.n)

    def _gather(self, idx: np.ndarray, valid: np.ndarray | None = None) -> Batch:
        rows = self.rows[idx]
        npos = self.lengths[idx] - 1
        if valid is not None:
            npos = np.where(valid, npos, 0)
        mask = (np.arange(self.seq_len)[None, :] < npos[:, None]).astype(np.float32)
        return Batch(rows[:, :-1], rows[:, 1:], mask)

    def indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """Row indices of the batch of `step`: positions step*B .. step*B+B-1 of the concatenated
        epoch permutations (each sequence once per epoch)."""
        g = step * batch_size + np.arange(batch_size)
        epochs, pos = np.divmod(g, self.n)
        out = np.empty(batch_size, np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(seed, int(e))[pos[sel]]
        return out

    def batch(self, step: int, batch_size: int, seed: int, rows: slice | None = None) -> Batch:
        """The batch of `step` (`rows`: only those rows of it, e.g. one process's share)."""
        idx = self.indices(step, batch_size, seed)
        return self._gather(idx if rows is None else idx[rows])

    def eval_batches(self, batch_size: int, max_batches: int | None = None) -> list[Batch]:
        """The split in order, in batches of `batch_size` (the last padded with masked rows)."""
        n = self.n if max_batches is None else min(self.n, max_batches * batch_size)
        out = []
        for start in range(0, n, batch_size):
            idx = np.arange(start, start + batch_size)
            valid = idx < n
            out.append(self._gather(np.where(valid, idx, 0), valid))
        return out


class StreamSplit:
    """A split that is one token stream; examples are windows of T + 1 consecutive tokens."""

    def __init__(self, ids: np.ndarray, seq_len: int):
        self.ids = np.asarray(ids, np.int32)
        self.seq_len = seq_len
        self.n_windows = len(self.ids) - seq_len  # valid start offsets
        self.n_targets = max(len(self.ids) - 1, 0)

    def __len__(self) -> int:
        return max(self.n_windows, 0)

    def _gather(self, offsets: np.ndarray) -> Batch:
        rows = self.ids[offsets[:, None] + np.arange(self.seq_len + 1)[None, :]]
        return Batch(rows[:, :-1], rows[:, 1:], np.ones((len(offsets), self.seq_len), np.float32))

    def indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        return np.random.default_rng([seed, step, 0xC0]).integers(0, self.n_windows, batch_size)

    def batch(self, step: int, batch_size: int, seed: int, rows: slice | None = None) -> Batch:
        """The batch of `step` (`rows`: only those rows of it, e.g. one process's share)."""
        idx = self.indices(step, batch_size, seed)
        return self._gather(idx if rows is None else idx[rows])

    def eval_batches(self, batch_size: int, max_batches: int | None = None) -> list[Batch]:
        """Evenly spaced windows over the split (non-overlapping when the split is short enough),
        `max_batches` batches at most; deterministic."""
        n_disjoint = max(len(self.ids) - 1, 0) // self.seq_len
        n_batches = max(1, n_disjoint // batch_size)
        if max_batches is not None:
            n_batches = min(n_batches, max_batches)
        n = n_batches * batch_size
        offsets = np.linspace(0, self.n_windows - 1, n).round().astype(np.int64)
        return [self._gather(offsets[i : i + batch_size]) for i in range(0, n, batch_size)]


class GPTData(NamedTuple):
    tokenizer: Tokenizer
    train: SequenceSplit | StreamSplit
    val: SequenceSplit | StreamSplit | None  # None when the validation split is empty
    mode: str
    info: dict  # counts for logs and notes


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown data mode {mode!r}; expected one of {MODES}")


def _split_seqs(seqs: list, val_fraction: float, seed: int) -> tuple[list, list]:
    n = len(seqs)
    perm = np.random.default_rng([seed, 0x5B]).permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    val = [seqs[i] for i in perm[:n_val]]
    train = [seqs[i] for i in perm[n_val:]]
    return train, val


def from_text(
    text: str,
    mode: str,
    block_size: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    chat_categories: Sequence[str] | None = None,
    tokenizer: Tokenizer | None = None,
    where: str = "<text>",
) -> GPTData:
    """Tokenize `text` in `mode` and split it 90/10 (see the module docstring).

    `tokenizer` defaults to the sorted unique characters of the text that is used (for chat: of the
    kept prompts and responses); passing one (e.g. from a model being fine-tuned) reuses its ids."""
    _check_mode(mode)
    if not isinstance(block_size, int) or block_size < 1:
        raise ConfigError(f"block_size must be a positive int, got {block_size!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if isinstance(text, (bytes, bytearray)):
        text = decode_utf8(bytes(text), where)
    info: dict = {"mode": mode, "source": where}
    if mode == "corpus":
        if tokenizer is None:
            tokenizer = Tokenizer.from_corpus(text)
        ids = np.asarray(tokenizer.encode(text), np.int32)
        n_val = int(len(ids) * val_fraction)
        train_ids, val_ids = ids[: len(ids) - n_val], ids[len(ids) - n_val :]
        T = block_size
        if len(train_ids) < T + 1:
            raise DataError(
                f"{where}: corpus has {len(train_ids)} training tokens, fewer than block_size + 1 = {T + 1}"
            )
        train = StreamSplit(train_ids, T)
        val = StreamSplit(val_ids, T) if len(val_ids) >= T + 1 else None
        info.update(n_tokens=int(len(ids)), train_tokens=int(len(train_ids)), val_tokens=int(len(val_ids)))
        return GPTData(tokenizer, train, val, mode, info)

    if mode == "docs":
        docs = parse_documents(text)
        if not docs:
            raise DataError(f"{where}: no documents (non-empty lines) found")
        if tokenizer is None:
            tokenizer = Tokenizer.from_corpus("".join(docs))
        if tokenizer.chat:
            raise ConfigError("docs mode needs a plain (non-chat) tokenizer")
        seqs = [tokenizer.encode_document(d) for d in docs]
    else:
        convs = parse_chat_pairs(text, chat_categories, where)
        if tokenizer is None:
            tokenizer = Tokenizer.from_corpus("".join(t for c in convs for _, t in c), chat=True)
        if not tokenizer.chat:
            raise ConfigError("chat mode needs a chat tokenizer (Tokenizer(chat=True))")
        seqs = [tokenizer.encode_conversation(c) for c in convs]
        info["categories"] = sorted(chat_categories) if chat_categories else "all"
    longest = max(len(s) for s in seqs)
    T = min(block_size, longest - 1)
    n_trunc = sum(len(s) > block_size + 1 for s in seqs)
    if n_trunc:
        warnings.warn(
            f"{where}: {n_trunc} of {len(seqs)} sequences are longer than "
            f"block_size + 1 = {block_size + 1} tokens and were truncated",
            stacklevel=2,
        )
    train_seqs, val_seqs = _split_seqs(seqs, val_fraction, seed)
    train = SequenceSplit(train_seqs, T)
    val = SequenceSplit(val_seqs, T) if val_seqs else None
    info.update(
        n_sequences=len(seqs),
        train_sequences=len(train_seqs),
        val_sequences=len(val_seqs),
        seq_len=T,
        truncated=n_trunc,
        train_targets=train.n_targets,
    )
    return GPTData(tokenizer, train, val, mode, info)


def load_data(
    path: str | os.PathLike | None,
    mode: str | None,
    block_size: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    chat_categories: Sequence[str] | None = None,
    tokenizer: Tokenizer | None = None,
) -> GPTData:
    """`from_text` on the UTF-8 file at `path`, or on a packaged data set named by `path` (see
    `resolve_data`; default: the packaged names list). `mode` None: the packaged data's mode, or
    "docs" for a file."""
    path, mode = resolve_data(path, mode)
    _check_mode(mode)
    return from_text(
        read_text(path),
        mode,
        block_size,
        seed=seed,
        val_fraction=val_fraction,
        chat_categories=chat_categories,
        tokenizer=tokenizer,
        where=str(path),
    )
