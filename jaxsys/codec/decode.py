"""Bit-exact JAX decoder of a layer blob: one host-to-device transfer, all tiles and lanes decoded in
parallel (vmap over tiles and lanes around a lax.scan over symbol steps), predictor undone on device.

Host side (cheap, O(tiles x lanes)): parse and validate the header, CRC32 of table/index/payload, then
pack everything the device needs into ONE uint32 buffer

    [ctl (16) | freq (256) | lane base (Nb) | lane words (Nb) | lane symbols (Nb) | payload words]

padded to bucketed sizes (Nb lanes, Wb payload words, Sb steps) so that many layers share one compiled
kernel. The kernel builds the slot -> (symbol, frequency, bias) tables from `freq` on device, decodes,
and reports a per-layer integrity flag (every lane ends in state 2^16 having consumed exactly its
words); a second small jit (specialised on the layer geometry) reorders lanes into tiles and tiles into
the array, undoes the delta predictor, and recomputes the positional checksum of the raw bytes.
"""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.codec import format as fmt
from jaxsys.codec import tiles as tl
from jaxsys.codec.errors import CodecError

_CTL = 16
_BLOCK = 4  # steps per scan iteration; measured best of 1, 2, 4, 8, 16 on XLA:CPU


def bucket(n: int, minimum: int) -> int:
    """Round up to a value of the form m * 2^e with m in 8..15 (<= 12.5% padding), at least `minimum`."""
    n = max(int(n), int(minimum))
    if n <= 16:
        return 16
    step = 1 << (n.bit_length() - 4)
    return -(-n // step) * step


def _lane_decode(base, nsym, nwords, words, sym_tab, fb_tab, mask, pb, steps: int, blk: int = _BLOCK):
    """Decode one lane for `steps` steps (symbols past `nsym` leave the state untouched).

    The scan runs over blocks of _BLOCK steps: a lane reads at most one word per step, so one
    contiguous slice words[ptr : ptr + _BLOCK] at the block start holds every word the block can
    need; each step then selects its word from the slice with compares instead of a gather (one
    slice-gather per block instead of one scalar gather per step: ~2x faster on XLA:CPU).
    Returns (symbols (steps,) uint8, ok) with ok = final state is 2^16 and exactly nwords consumed.
    """
    W = words.shape[0]
    one = jnp.uint32(1)
    x0 = words[jnp.minimum(base, W - 1)] | (words[jnp.minimum(base + one, W - 1)] << 16)

    def block(carry, kb):
        x, ptr = carry
        buf = jax.lax.dynamic_slice(words, (ptr,), (blk,))  # start clamped into range
        start = ptr
        out = []
        for j in range(blk):
            slot = x & mask
            s = sym_tab[slot]
            fb = fb_tab[slot]
            xn = ((fb & 0xFFFF) + one) * (x >> pb) + (fb >> 16)
            need = xn < jnp.uint32(1 << 16)
            loc = ptr - start
            w = buf[0]
            for q in range(1, j + 1):
                w = jnp.where(loc == q, buf[q], w)
            xn = jnp.where(need, (xn << 16) | w, xn)
            act = kb * blk + j < nsym
            x = jnp.where(act, xn, x)
            ptr = jnp.where(act, ptr + need.astype(jnp.uint32), ptr)
            out.append(s)
        return (x, ptr), jnp.stack(out)

    (x, ptr), syms = jax.lax.scan(block, (x0, base + jnp.uint32(2)), jnp.arange(steps // blk, dtype=jnp.uint32))
    ok = (x == jnp.uint32(1 << 16)) & (ptr - base == nwords)
    return syms.reshape(steps), ok


def decode_lanes(pack, n_lanes: int, steps: int, prob_bits: int, blk: int = _BLOCK):
    """Traceable: pack (uint32) -> (symbols (steps, n_lanes) uint8, step-major; per-lane ok, with
    lanes past the real count (control word 1) reported ok)."""
    ctl = pack[:_CTL]
    n_real = ctl[1]
    o = _CTL
    freq = pack[o : o + 256]
    o += 256
    base, nwords, nsym = (pack[o + i * n_lanes : o + (i + 1) * n_lanes] for i in range(3))
    w32 = pack[o + 3 * n_lanes :]
    words = jnp.stack([w32 & 0xFFFF, w32 >> 16], axis=-1).reshape(-1)
    # slot -> symbol / frequency / bias tables over the 2^prob_bits slots (validated on the host:
    # the frequencies sum to 2^prob_bits, so the repeat fills the table exactly)
    M = 1 << prob_bits
    cum_end = jnp.cumsum(freq, dtype=jnp.uint32)
    slots = jnp.arange(M, dtype=jnp.uint32)
    sym = jnp.repeat(jnp.arange(256, dtype=jnp.int32), freq, total_repeat_length=M)
    f = freq[sym]
    bias = slots - (cum_end[sym] - f)
    fb_tab = ((f - 1) & 0xFFFF) | (bias << 16)
    sym_tab = sym.astype(jnp.uint8)
    pb = jnp.uint32(prob_bits)
    mask = jnp.uint32(M - 1)
    lane = functools.partial(
        _lane_decode, words=words, sym_tab=sym_tab, fb_tab=fb_tab, mask=mask, pb=pb, steps=steps, blk=blk
    )
    # out_axes=1 keeps the decoded symbols step-major: (steps, lanes)
    syms, ok = jax.vmap(lane, out_axes=(1, 0))(base, nsym, nwords)
    real = jnp.arange(n_lanes, dtype=jnp.uint32) < n_real
    return syms, ok | ~real


@functools.partial(jax.jit, static_argnames=("n_lanes", "steps", "prob_bits"))
def decode_kernel(pack, n_lanes: int, steps: int, prob_bits: int):
    """pack (uint32) -> (symbols (steps, n_lanes) uint8 in step-major order, all-lanes-ok flag)."""
    syms, ok = decode_lanes(pack, n_lanes, steps, prob_bits)
    return syms, jnp.all(ok)


def assemble_body(syms_SxN, ok, sums, geom, verify: bool):
    """Lanes -> tiles -> array; undo the predictor; optionally recheck the raw positional checksum."""
    rows, cols, tr, tc, T, L, S, predictor, dtype, shape = geom
    P = min(tr, rows) * min(tc, cols)
    if predictor == tl.PRED_NONE and rows % tr == 0 and cols % tc == 0 and tc % L == 0:
        # full tiles, lanes dividing the tile width: step k = r * (tc / L) + c // L, lane = c mod L,
        # so one transpose takes (r, c/L, tile row, tile col, lane) straight to the array
        gr, gc = rows // tr, cols // tc
        a = syms_SxN[:S, : T * L].reshape(tr, tc // L, gr, gc, L)
        u2 = _regroup(a, (2, 0, 3, 1, 4)).reshape(rows, cols)
        if verify:
            ok = ok & _sums_match(u2, sums)
        return jax.lax.bitcast_convert_type(u2, jnp.dtype(dtype)).reshape(shape), ok
    t = _regroup(syms_SxN[:S, : T * L].reshape(S, T, L), (1, 0, 2)).reshape(T, S * L)[:, :P]
    if predictor == tl.PRED_DELTA:
        t = jnp.cumsum(t, axis=1, dtype=jnp.uint8)  # uint8 arithmetic wraps mod 256
    u2 = _from_tiles(t, rows, cols, tr, tc)
    if verify:
        ok = ok & _sums_match(u2, sums)
    return jax.lax.bitcast_convert_type(u2, jnp.dtype(dtype)).reshape(shape), ok


assemble = jax.jit(assemble_body, static_argnames=("geom", "verify"))


def _regroup(a, perm):
    """transpose(a, perm) for uint8 `a` whose last axis stays last; moves 4-byte words when the
    last axis allows it (XLA:CPU transposes uint32 elements far faster than bytes)."""
    n = a.shape[-1]
    if n % 4:
        return a.transpose(perm)
    w = jax.lax.bitcast_convert_type(a.reshape(a.shape[:-1] + (n // 4, 4)), jnp.uint32)
    w = w.transpose(perm)
    return jax.lax.bitcast_convert_type(w, jnp.uint8).reshape(w.shape[:-1] + (n,))


def _sums_match(u2, sums):
    b = u2.reshape(-1).astype(jnp.uint32)
    i = jnp.arange(1, b.shape[0] + 1, dtype=jnp.uint32)
    s1 = jnp.sum(b, dtype=jnp.uint32)
    s2 = jnp.sum(b * i, dtype=jnp.uint32)
    return (s1 == sums[0]) & (s2 == sums[1])


def _from_tiles(t, rows, cols, tr, tc):
    gc = tl.grid(rows, cols, tr, tc)[1]
    row_blocks = {}
    for r0, nr, h, c0, nc, w in tl.tile_groups(rows, cols, tr, tc):
        ids = tl.group_tile_ids(r0, nr, c0, nc, gc)
        if np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
            sel = t[int(ids[0]) : int(ids[0]) + len(ids), : h * w]
        else:
            sel = t[ids, : h * w]
        blk = _regroup(sel.reshape(nr, nc, h, w), (0, 2, 1, 3)).reshape(nr * h, nc * w)
        row_blocks.setdefault(r0, []).append(blk)
    rowsl = [jnp.concatenate(b, axis=1) if len(b) > 1 else b[0] for _, b in sorted(row_blocks.items())]
    return jnp.concatenate(rowsl, axis=0) if len(rowsl) > 1 else rowsl[0]


@functools.partial(jax.jit, static_argnames=("geom",))
def assemble_raw(pack, geom):
    rows, cols, dtype, shape, n = geom
    b = pack[_CTL:]
    u = jnp.stack([(b >> s) & 0xFF for s in (0, 8, 16, 24)], axis=-1).reshape(-1)[:n]
    u2 = u.astype(jnp.uint8).reshape(rows, cols)
    ok = _sums_match(u2, pack[:2])
    return jax.lax.bitcast_convert_type(u2, jnp.dtype(dtype)).reshape(shape), ok


def prepare(blob, check_crc: bool = True):
    """Host half of decoding: validate, and build the single uint32 transfer buffer.

    Returns (pack ndarray, static kernel args dict or None for raw layers, geometry tuple).
    """
    p = fmt.parse_layer(blob, check_crc=check_crc)
    h = p.header
    sums = (h.raw_sum1, h.raw_sum2)
    if h.coding == fmt.CODING_RAW:
        n = h.rows * h.cols
        nb = bucket(-(-n // 4), 1024)
        pack = np.zeros(_CTL + nb, np.uint32)
        pack[:2] = sums
        pack.view(np.uint8)[_CTL * 4 : _CTL * 4 + n] = np.frombuffer(p.payload, np.uint8)
        return pack, None, (h.rows, h.cols, h.dtype.name, h.shape, n)
    base, nw, lens = fmt.lane_layout(p)
    N = len(base)
    Nb = bucket(N, 64)
    Sb = bucket(h.steps, 64)  # a multiple of 8, hence of _BLOCK
    n_words = h.payload_size // 2
    Wb = bucket(-(-(n_words + 2 + _BLOCK) // 2), 512)  # uint32 slots (2 words each) + slice slack
    pack = np.zeros(_CTL + 256 + 3 * Nb + Wb, np.uint32)
    pack[0], pack[1] = h.prob_bits, N
    pack[_CTL : _CTL + 256] = p.freq
    o = _CTL + 256
    pack[o : o + N] = base
    pack[o + Nb : o + Nb + N] = nw
    pack[o + 2 * Nb : o + 2 * Nb + N] = lens
    o += 3 * Nb
    pack.view(np.uint8)[4 * o : 4 * o + h.payload_size] = np.frombuffer(p.payload, np.uint8)
    geom = (h.rows, h.cols, h.tile_rows, h.tile_cols, h.n_tiles, h.lanes, h.steps, h.predictor, h.dtype.name, h.shape)
    return pack, {"n_lanes": Nb, "steps": Sb, "prob_bits": h.prob_bits, "sums": np.array(sums, np.uint32)}, geom


def decode_layer_async(blob, check_crc: bool = True, verify_raw: bool = False):
    """Dispatch the decode of `blob` without waiting: returns (array, ok) device values.

    `ok` is a device bool: every lane ends in state 2^16 having consumed exactly its words (and, with
    `verify_raw`, the positional checksum of the raw bytes matches). The caller must check it (see
    `decode_layer`) before trusting the array.
    """
    pack, kargs, geom = prepare(blob, check_crc)
    if kargs is None:
        return assemble_raw(jax.device_put(pack), geom)
    pack[2:4] = kargs["sums"]  # carried in the same buffer (control words 2, 3)
    dev = jax.device_put(pack)
    syms, ok = decode_kernel(dev, n_lanes=kargs["n_lanes"], steps=kargs["steps"], prob_bits=kargs["prob_bits"])
    return assemble(syms, ok, dev[2:4], geom, verify_raw)


def decode_layer(blob, check: bool = True, verify_raw: bool = False) -> jax.Array:
    """Decode a layer blob on the default JAX device.

    The blob travels to the device once, as one buffer; the result stays there. Header, table, index
    and payload are CRC-checked on the host before anything is sent, so a corrupted blob cannot reach
    the device. With `check` (the default) the decoded bytes are verified against the stored raw
    CRC32 (one device-to-host copy of the result): a stream, table or metadata error (a flipped
    predictor byte, say) raises `CodecError`. `verify_raw` also recomputes the positional checksum of
    the decoded bytes on device (guards against coder bugs; costs ~2 passes over the output).
    """
    out, ok = decode_layer_async(blob, verify_raw=verify_raw)
    if check:
        if not bool(ok):
            raise CodecError(
                "decoded layer failed its integrity check (rANS final state, word counts "
                "or raw checksum): the blob is corrupted"
            )
        check_raw_crc([out], [fmt.parse_header(blob).raw_crc], [""])
    return out


def check_raw_crc(values, crcs, wheres) -> None:
    """Fetch decoded int8/uint8 arrays and compare their CRC32 with the stored raw CRCs: the one check
    that covers the metadata the device kernels trust (predictor, dtype, tiling)."""
    for a, crc, where in zip(jax.device_get(list(values)), crcs, wheres):
        if zlib.crc32(np.ascontiguousarray(a)) != crc:
            raise CodecError(f"{where}decoded data fails the raw CRC32 (corrupted stream or metadata)")


# ---------------------------------------------------------------------------------------------------
# group blobs (format version 2): any subset of a group's tensors decodes in ONE kernel call


def prepare_group(pg, which=None):
    """Host half for a group blob: the selected tensors' lanes, words and raw bytes in ONE uint32
    buffer [ctl | freq | lane base | lane words | lane symbols | words | raw bytes] (bucketed sizes).

    Returns (pack, statics); `statics` (hashable) describes every selected tensor for `group_values`.
    """
    which = pg.select(which)
    words_all = pg.words()
    bases, nws, lens, wchunks, raws, geoms = [], [], [], [], [], []
    wo = lo = ro = 0
    steps = 1
    for k in which:
        m = pg.members[k]
        h = m.header
        if h.coding == fmt.CODING_RAW:
            n = h.rows * h.cols
            raws.append(pg.raw_bytes(k))
            geoms.append(("raw", ro, n, h.rows, h.cols, h.dtype.name, h.shape))
            ro += n
            continue
        base, nw, ln = m.lanes()
        n_m = int(nw.sum())
        wchunks.append(words_all[m.word_base : m.word_base + n_m])
        bases.append(base - m.word_base + wo)
        nws.append(nw)
        lens.append(ln)
        T, L = h.n_tiles, h.lanes
        geoms.append(
            ("rans", lo, (h.rows, h.cols, h.tile_rows, h.tile_cols, T, L, h.steps, h.predictor, h.dtype.name, h.shape))
        )
        lo += T * L
        wo += n_m
        steps = max(steps, h.steps)
    N = lo
    Nb, Sb = bucket(N, 8), bucket(steps, 64)
    Wb = bucket(-(-(wo + 2 + _BLOCK) // 2), 512)
    Rb = bucket(-(-ro // 4), 16) if ro else 0
    pack = np.zeros(_CTL + 256 + 3 * Nb + Wb + Rb, np.uint32)
    pack[0], pack[1] = pg.prob_bits, N
    pack[_CTL : _CTL + 256] = pg.freq
    o = _CTL + 256
    if N:
        pack[o : o + N] = np.concatenate(bases)
        pack[o + Nb : o + Nb + N] = np.concatenate(nws)
        pack[o + 2 * Nb : o + 2 * Nb + N] = np.concatenate(lens)
    o += 3 * Nb
    if wo:
        pack.view(np.uint8)[4 * o : 4 * o + 2 * wo] = np.concatenate(wchunks).view(np.uint8)
    o += Wb
    if ro:
        pack.view(np.uint8)[4 * o : 4 * o + ro] = np.concatenate(raws)
    return pack, (Nb, Sb, int(pg.prob_bits), o, tuple(geoms))


def group_values(pack, statics):
    """Traceable: a `prepare_group` pack -> list of (tensor, ok) for the selected tensors.

    One kernel call decodes all lanes of all selected tensors (they share the table); each tensor
    is then cut out of the step-major symbols and assembled as in `assemble_body`."""
    Nb, Sb, pb, raw_at, geoms = statics
    out = []
    if any(g[0] == "rans" for g in geoms):
        syms, ok_n = decode_lanes(pack, Nb, Sb, pb)
    if any(g[0] == "raw" for g in geoms):
        rb = jax.lax.bitcast_convert_type(pack[raw_at:], jnp.uint8).reshape(-1)
    for g in geoms:
        if g[0] == "rans":
            _, lo, geom = g
            n = geom[4] * geom[5]
            out.append(assemble_body(syms[:, lo : lo + n], jnp.all(ok_n[lo : lo + n]), None, geom, False))
        else:
            _, ro, n, rows, cols, dt, shape = g
            u2 = rb[ro : ro + n].reshape(rows, cols)
            out.append((jax.lax.bitcast_convert_type(u2, jnp.dtype(dt)).reshape(shape), jnp.bool_(True)))
    return out


decode_group_values = jax.jit(group_values, static_argnames=("statics",))


def decode_group(blob, which=None, check: bool = True) -> list:
    """Decode the selected tensors (default: all) of a group blob on the device, in one transfer
    and one kernel call. Host CRCs are checked first; with `check` the device integrity flags and the
    decoded bytes' raw CRC32 are verified, and a failure raises `CodecError` naming the tensor's index
    in the group."""
    from jaxsys.codec import group as G

    return decode_parsed_group(G.parse_group(blob), which, check)


def decode_parsed_group(pg, which=None, check: bool = True) -> list:
    """`decode_group` on an already parsed and validated group."""
    which = pg.select(which)
    pack, st = prepare_group(pg, which)
    vals = decode_group_values(jax.device_put(pack), statics=st)
    if check:
        oks = np.asarray(jnp.stack([ok for _, ok in vals]))
        if not oks.all():
            raise CodecError(
                f"tensor {which[int(np.argmin(oks))]}: decoded data failed its integrity "
                "check (rANS final state or word counts): the blob is corrupted"
            )
        crcs = [pg.members[k].header.raw_crc for k in which]
        check_raw_crc([a for a, _ in vals], crcs, [f"tensor {k}: " for k in which])
    return [a for a, _ in vals]
