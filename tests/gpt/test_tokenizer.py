import warnings

import pytest

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.tokenizer import Tokenizer


def test_from_corpus_ids_and_plain_specials():
    tok = Tokenizer.from_corpus("banana\ncab")
    assert tok.chars == ["\n", "a", "b", "c", "n"]
    assert tok.bos == 5 and tok.vocab_size == 6
    assert tok.user is None and tok.assistant is None and tok.end_turn is None
    assert tok.encode("cab") == [3, 1, 2]


def test_chat_special_ids():
    tok = Tokenizer(["a", "b"], chat=True)
    assert (tok.user, tok.assistant, tok.end_turn, tok.bos, tok.vocab_size) == (2, 3, 4, 5, 6)


@pytest.mark.parametrize("text", ["", "emma", "olivia ava", "ÿé ü"])
def test_round_trip_document(text):
    tok = Tokenizer.from_corpus("emma olivia ava ÿéü")
    ids = tok.encode_document(text)
    assert ids[0] == tok.bos and ids[-1] == tok.bos and len(ids) == len(text) + 2
    assert tok.decode(ids) == text


def test_round_trip_conversation():
    tok = Tokenizer.from_corpus("hi there, how are you?", chat=True)
    turns = [("user", "hi"), ("assistant", "how are you?")]
    ids = tok.encode_conversation(turns)
    h, i = tok.encode("h")[0], tok.encode("i")[0]
    assert ids[:5] == [tok.bos, tok.user, h, i, tok.end_turn]
    assert ids[5] == tok.assistant and ids[-2:] == [tok.end_turn, tok.bos]
    assert len(ids) == 2 + 2 * 2 + 2 + len("how are you?")
    assert tok.decode(ids) == "hihow are you?"
    # split on special tokens recovers every turn's text
    texts, cur = [], []
    for t in ids[1:-1]:
        if t == tok.end_turn:
            texts.append(tok.decode(cur))
            cur = []
        elif t not in (tok.user, tok.assistant):
            cur.append(t)
    assert texts == ["hi", "how are you?"]


def test_unknown_chars_dropped_with_warning():
    tok = Tokenizer.from_corpus("abc")
    with pytest.warns(UserWarning, match="unknown character"):
        ids = tok.encode("axbzc")
    assert ids == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok.encode("cab")  # no warning for known text


def test_non_utf8_bytes_rejected():
    tok = Tokenizer.from_corpus("abc")
    with pytest.raises(DataError, match="UTF-8"):
        tok.encode(b"\xff\xfeab")
    assert tok.encode(b"ab") == [0, 1]


def test_decode_out_of_range():
    tok = Tokenizer.from_corpus("ab")
    with pytest.raises(DataError, match="outside the vocabulary"):
        tok.decode([0, 7])


def test_role_errors():
    with pytest.raises(ConfigError, match="chat mode"):
        Tokenizer.from_corpus("ab").encode_conversation([("user", "a")])
    with pytest.raises(DataError, match="unknown conversation role"):
        Tokenizer.from_corpus("ab", chat=True).encode_conversation([("system", "a")])


@pytest.mark.parametrize("chat", [False, True])
def test_meta_round_trip(chat):
    tok = Tokenizer.from_corpus("hello world", chat=chat)
    cfg = GPTConfig(vocab_size=tok.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=16)
    meta = tok.to_meta(cfg)
    assert meta["vocab_size"] == tok.vocab_size and meta["chars"] == sorted(set("hello world"))
    assert ("special_tokens" in meta) == chat
    if chat:
        assert meta["special_tokens"] == ["user", "assistant", "end_turn"]
    assert Tokenizer.from_meta(meta) == tok


def test_meta_errors():
    tok = Tokenizer.from_corpus("ab")
    with pytest.raises(ConfigError, match="vocab_size"):
        tok.to_meta(GPTConfig(vocab_size=9, n_embd=8, n_head=2))
    with pytest.raises(DataError, match="vocab_size=5"):
        Tokenizer.from_meta({"vocab_size": 5, "chars": ["a", "b"]})
    with pytest.raises(DataError, match="single-character"):
        Tokenizer.from_meta({"vocab_size": 3, "chars": ["ab", "c"]})
    with pytest.raises(DataError, match="duplicates"):
        Tokenizer(["a", "a"])
    with pytest.raises(DataError, match="'chars'"):
        Tokenizer.from_meta({"vocab_size": 3})


def test_config_validate():
    cfg = GPTConfig(vocab_size=10, n_embd=12, n_head=3)
    assert cfg.head_dim == 4
    with pytest.raises(ConfigError, match="not divisible"):
        GPTConfig(vocab_size=10, n_embd=10, n_head=3)
    with pytest.raises(ConfigError, match="block_size"):
        GPTConfig(vocab_size=10, block_size=0)


def test_many_duplicate_chars_fail_fast():
    """A hostile meta.json with 200,000 copies of one character: a linear check, not a quadratic one."""
    import time

    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"duplicates: \['a'\]"):
        Tokenizer(["a"] * 200_000)
    assert time.perf_counter() - t0 < 5  # quadratic counting took minutes
