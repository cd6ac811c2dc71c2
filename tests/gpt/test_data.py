"""jaxsys.gpt.data: parsing, 90/10 splits, batches as a pure function of (seed, step), masking."""

import warnings

import jax
import numpy as np
import pytest

from jaxsys.errors import ConfigError, DataError
from jaxsys.gpt import data as gd
from jaxsys.gpt.tokenizer import Tokenizer
from tests.gpt.names import NAMES as _ALL_NAMES

NAMES = "\n".join(_ALL_NAMES.split("\n")[:21]) + "\n"  # the first 21 names, one per line
CHAT_TSV = (
    "category\tprompt\tresponse\n"
    "greetings\tHello\tHi there!\n"
    "greetings\tHow are you?\tI am fine.\n"
    "ai\tWhat is AI?\tA field of study.\n"
    "conversations\tGood morning\tMorning!\n"
    "conversations\tBye\tSee you.\n"
)


def _docs(split, tok):
    """Documents back from a split's padded rows (independent of the batching code)."""
    return [tok.decode(split.rows[i, : split.lengths[i]]) for i in range(len(split))]


def test_docs_split_is_seeded_disjoint_and_complete():
    d = gd.from_text(NAMES, "docs", block_size=16, seed=0)
    names = NAMES.split()
    tr, va = _docs(d.train, d.tokenizer), _docs(d.val, d.tokenizer)
    assert len(va) == round(0.1 * len(names)) and len(tr) + len(va) == len(names)
    assert sorted(tr + va) == sorted(names) and not set(tr) & set(va)
    again = gd.from_text(NAMES, "docs", block_size=16, seed=0)
    assert _docs(again.val, again.tokenizer) == va
    other = [_docs(gd.from_text(NAMES, "docs", block_size=16, seed=s).val, d.tokenizer) for s in range(1, 6)]
    assert any(o != va for o in other)
    assert d.tokenizer.chars == sorted(set("".join(names)))
    # rows are [BOS, chars..., BOS]
    assert d.train.rows[0, 0] == d.tokenizer.bos
    assert d.train.rows[0, d.train.lengths[0] - 1] == d.tokenizer.bos


def test_docs_batches_shift_mask_and_cover_each_epoch_once():
    d = gd.from_text(NAMES, "docs", block_size=16, seed=3, val_fraction=0.0)
    tok, n, B = d.tokenizer, len(d.train), 4
    T = d.train.seq_len
    assert T == max(len(s) for s in NAMES.split()) + 1  # [BOS] + longest name, targets + BOS
    seen = []
    for step in range(n * 2 // B + 1):
        b = d.train.batch(step, B, seed=7)
        assert b.tokens.shape == b.targets.shape == b.mask.shape == (B, T)
        np.testing.assert_array_equal(b.tokens[:, 1:], b.targets[:, :-1])
        for row in range(B):
            k = int(b.mask[row].sum())
            assert b.mask[row, :k].all() and not b.mask[row, k:].any()  # a prefix is unmasked
            text = tok.decode(b.tokens[row, : k + 1])
            assert b.tokens[row, 0] == tok.bos and b.targets[row, k - 1] == tok.bos
            assert k == len(text) + 1
            assert (b.tokens[row, k + 1 :] == gd.PAD).all()
            seen.append(text)
    names = sorted(NAMES.split())
    assert sorted(seen[:n]) == names and sorted(seen[n : 2 * n]) == names  # once per epoch
    assert seen[:n] != seen[n : 2 * n]  # a fresh permutation each epoch


def test_batches_are_a_pure_function_of_seed_and_step():
    a = gd.from_text(NAMES, "docs", block_size=16, seed=0)
    b = gd.from_text(NAMES, "docs", block_size=16, seed=0)
    for step in (0, 5, 17):
        x, y = a.train.batch(step, 3, seed=11), b.train.batch(step, 3, seed=11)
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a.train.batch(0, 3, 11).tokens, a.train.batch(0, 3, 12).tokens)
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
    c = gd.from_text(text, "corpus", block_size=8)
    np.testing.assert_array_equal(c.train.batch(4, 5, 1).tokens, c.train.batch(4, 5, 1).tokens)
    assert not np.array_equal(c.train.batch(4, 5, 1).tokens, c.train.batch(5, 5, 1).tokens)


def test_corpus_windows_are_contiguous_and_val_is_the_tail():
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(1000))
    c = gd.from_text(text, "corpus", block_size=10)
    tok = c.tokenizer
    ids = np.array(tok.encode(text))
    np.testing.assert_array_equal(c.train.ids, ids[:900])
    np.testing.assert_array_equal(c.val.ids, ids[900:])
    b = c.train.batch(3, 6, seed=0)
    assert (b.mask == 1).all()
    for row in range(6):
        seq = np.concatenate([b.tokens[row], b.targets[row, -1:]])
        starts = [s for s in range(900 - 10) if np.array_equal(ids[s : s + 11], seq)]
        assert starts  # a real window of the training text
    ev = c.val.eval_batches(4)
    assert len(ev) == 2 and all(e.tokens.shape == (4, 10) for e in ev)
    assert c.val.eval_batches(4, max_batches=1)[0].tokens.shape == (4, 10)
    with pytest.raises(DataError, match="block_size"):
        gd.from_text("abc", "corpus", block_size=10)


def test_eval_batches_cover_the_validation_split_once():
    d = gd.from_text(NAMES, "docs", block_size=16, seed=0, val_fraction=0.5)
    ev = d.val.eval_batches(4)
    assert sum(float(b.mask.sum()) for b in ev) == d.val.n_targets
    texts = [
        d.tokenizer.decode(b.tokens[r, : int(b.mask[r].sum()) + 1]) for b in ev for r in range(4) if b.mask[r].any()
    ]
    assert sorted(texts) == sorted(_docs(d.val, d.tokenizer))


@pytest.mark.x64  # compares losses in float64
def test_padding_does_not_change_the_loss():
    from jaxsys.gpt import model
    from jaxsys.gpt.config import GPTConfig

    d = gd.from_text(NAMES, "docs", block_size=16, seed=0)
    cfg = GPTConfig(vocab_size=d.tokenizer.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=d.train.seq_len)
    p = model.init_params(jax.random.PRNGKey(0), cfg, dtype=np.float64)
    b = d.train.batch(0, 4, seed=0)
    loss = jax.jit(model.loss_fn, static_argnames="cfg")
    base = float(loss(p, b.tokens, b.targets, b.mask, cfg))
    junk = np.random.default_rng(0).integers(0, cfg.vocab_size, b.tokens.shape)
    pad = b.mask == 0
    after_end = np.concatenate([np.zeros_like(pad[:, :1]), pad[:, :-1]], 1)  # inputs past the end
    tokens = np.where(after_end, junk, b.tokens).astype(np.int32)
    targets = np.where(pad, junk, b.targets).astype(np.int32)
    assert float(loss(p, tokens, targets, b.mask, cfg)) == pytest.approx(base, abs=1e-12)
    # the loss is the mean over the real positions of all documents (a numpy loop over rows)
    lp = np.asarray(jax.nn.log_softmax(model.logits_fn(p, b.tokens, cfg), -1))
    tot = 0.0
    for r in range(4):
        k = int(b.mask[r].sum())
        tot += -lp[r, np.arange(k), b.targets[r, :k]].sum()
    assert base == pytest.approx(tot / b.mask.sum(), rel=1e-10)


def test_chat_pairs_conversations_and_category_filter():
    d = gd.from_text(CHAT_TSV, "chat", block_size=64, val_fraction=0.0)
    tok = d.tokenizer
    assert tok.chat and len(d.train) == 5
    rows = [list(d.train.rows[i, : d.train.lengths[i]]) for i in range(5)]
    want = tok.encode_conversation([("user", "Hello"), ("assistant", "Hi there!")])
    assert want in rows
    f = gd.from_text(CHAT_TSV, "chat", block_size=64, val_fraction=0.0, chat_categories=["greetings", "conversations"])
    assert len(f.train) == 4 and "I" in f.tokenizer.chars and "W" not in f.tokenizer.chars
    with pytest.raises(DataError, match="nosuch"):
        gd.from_text(CHAT_TSV, "chat", block_size=64, chat_categories=["nosuch"])
    with pytest.raises(DataError, match="line 3"):
        gd.from_text("greetings\tHello\tHi\ngreetings\tA\tB\nbad line\n", "chat", block_size=64)


def test_long_sequences_are_truncated_with_a_warning():
    with pytest.warns(UserWarning, match="truncated"):
        d = gd.from_text("abcdefghijklmnop\nab\n", "docs", block_size=5, val_fraction=0.0)
    assert d.train.seq_len == 5 and d.train.lengths.max() == 6


def test_bad_input_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"emma\nol\xffivia\n")
    with pytest.raises(DataError, match=r"not valid UTF-8.*byte 7 \(line 2\)"):
        gd.load_data(bad, "docs", block_size=16)
    with pytest.raises(DataError, match="not found"):
        gd.load_data(tmp_path / "missing.txt", "docs", block_size=16)
    with pytest.raises(ConfigError, match="mode"):
        gd.from_text(NAMES, "poems", block_size=16)
    with pytest.raises(DataError, match="no documents"):
        gd.from_text("\n  \n", "docs", block_size=16)
    with pytest.raises(ConfigError, match="chat tokenizer"):
        gd.from_text(CHAT_TSV, "chat", block_size=16, tokenizer=Tokenizer(list("abc")))


def test_packaged_names_file():
    p = gd.default_names_path()
    assert p.is_file() and (p.parent / "names.LICENSE.md").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = gd.load_data(None, "docs", block_size=16)
    assert d.info["n_sequences"] == 32033 and d.tokenizer.vocab_size == 27


def test_packaged_data_sets_load_by_name_with_their_mode_and_licence():
    """`--data names|chat|shakespeare` reads the files shipped in jaxsys/data (no ../shared needed),
    each in its own mode unless a mode is given; a local path is still a path."""
    expected = {"names": ("docs", 32033), "chat": ("chat", None), "shakespeare": ("corpus", None)}
    for name, (mode, n_seq) in expected.items():
        path, got_mode = gd.resolve_data(name)
        assert got_mode == mode and path.is_file() and path.parent.name == "data"
        assert (path.parent / f"{path.stem}.LICENSE.md").is_file()
    assert gd.resolve_data(None) == (gd.default_names_path(), "docs")
    assert gd.resolve_data("shakespeare", "docs")[1] == "docs"
    d = gd.load_data("chat", None, block_size=64, chat_categories=["greetings"])
    assert d.mode == "chat" and d.tokenizer.chat and d.info["n_sequences"] > 10
    d = gd.load_data("shakespeare", None, block_size=32)
    assert d.mode == "corpus" and d.info["n_tokens"] == 1115394 and d.train.seq_len == 32
    assert gd.resolve_data("my.txt") == (gd.Path("my.txt"), "docs")
    with pytest.raises(ConfigError, match="unknown packaged data 'poems'"):
        gd.packaged_path("poems")
