"""Fixed little-endian headers described once, by field name: packing and unpacking go by keyword, so no
reader or writer depends on the position of a field in a 26-tuple."""

from __future__ import annotations

import struct


class Layout:
    """A struct of named fields, e.g. Layout(("magic", "4s"), ("version", "H"))."""

    def __init__(self, *fields: tuple[str, str]):
        self.names = tuple(n for n, _ in fields)
        self.struct = struct.Struct("<" + "".join(f for _, f in fields))
        self.size = self.struct.size
        self._offsets, o = {}, 0
        for n, f in fields:
            self._offsets[n] = o
            o += struct.calcsize("<" + f)

    def pack(self, **values) -> bytes:
        missing = set(self.names) - set(values)
        extra = set(values) - set(self.names)
        if missing or extra:
            raise TypeError(f"header fields missing {sorted(missing)} / unknown {sorted(extra)}")
        return self.struct.pack(*(values[n] for n in self.names))

    def unpack(self, buf, offset: int = 0) -> dict:
        return dict(zip(self.names, self.struct.unpack_from(buf, offset)))

    def offset(self, name: str) -> int:
        """Byte offset of a field inside the header."""
        return self._offsets[name]
