"""Websocket frames for the common case, at a fraction of wsproto's cost per frame. No I/O.

Chatsight's traffic is almost only whole text frames: requests out (masked, as a client's must
be) and replies in (unmasked). wsproto builds an event object, a frame object and a masker per
frame, which made framing about a third of chatmod's CPU per message. Here:

- :func:`encode_text_frames` frames and masks a whole batch of outgoing texts at once: one
  XOR over the batch, each frame with its own random masking key (RFC 6455 5.3);
- :class:`IncomingFrames` splits a whole read into frames and decodes every complete,
  unfragmented, valid UTF-8 text frame itself. Every other frame (control frames, fragments,
  binary, invalid UTF-8) is handed on whole, as bytes, for wsproto to parse, so wsproto keeps
  deciding what everything else means. A header wsproto refuses as soon as it sees it (masked,
  reserved bits, unknown opcode, a length in more bytes than needed) or a frame over the size
  limit hands the rest of the stream to wsproto, which then sees it exactly as it would have.

tests/test_ws_frames.py checks both against wsproto with generated frame streams.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

FIN_TEXT = 0x81  # FIN set, no reserved bits, opcode 1 (text)
MASK_BIT = 0x80
RESERVED_BITS = 0x70
OPCODE_BITS = 0x0F
FIN_BIT = 0x80
CONTINUATION, TEXT, BINARY = 0x0, 0x1, 0x2
KNOWN_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})
MAX_CONTROL_PAYLOAD = 125
LENGTH_16, LENGTH_64 = 126, 127
MASK_SIZE = 4
# Payload sizes whose masked text frame header is made once, at import: the usual request
# (a chat line with its context as metadata is 150-600 bytes). A header made per frame
# (struct.pack, tuples) cost a sixth of a 172-byte request's framing.
TABLED_SIZES = 2048
# The header of a masked text frame, by payload size (2 bytes under 126, then 4), and the
# zeros that leave it and its masking key unmasked.
_HEADERS = [bytes((FIN_TEXT, MASK_BIT | size)) for size in range(LENGTH_16)] + [
    struct.pack("!BBH", FIN_TEXT, MASK_BIT | LENGTH_16, size)
    for size in range(LENGTH_16, TABLED_SIZES)]
_HEADER_ZEROS = [bytes(2 + MASK_SIZE)] * LENGTH_16 + [bytes(4 + MASK_SIZE)] * (
    TABLED_SIZES - LENGTH_16)


def encode_text_frames(payloads: Sequence[bytes], mask_keys: bytes | None = None) -> bytes:
    """Masked client text frames, one whole frame per UTF-8 payload, as one bytes.

    ``mask_keys`` (4 bytes per payload) is for tests; by default each frame gets a fresh key
    from ``os.urandom``, as the RFC asks of a client.
    """
    keys = os.urandom(MASK_SIZE * len(payloads)) if mask_keys is None else mask_keys
    frames: list[bytes] = []
    masks: list[bytes] = []  # zero under each header, the repeated key under each payload
    add_frame, add_mask = frames.append, masks.append
    start = 0
    for payload in payloads:
        size = len(payload)
        key = keys[start:start + MASK_SIZE]
        start += MASK_SIZE
        if size < TABLED_SIZES:  # nearly every request: headers made once, appends (no tuples)
            add_frame(_HEADERS[size])
            add_frame(key)
            add_frame(payload)
            add_mask(_HEADER_ZEROS[size])
            add_mask((key * (size // MASK_SIZE + 1))[:size])
            continue
        if size < 0x10000:
            header = struct.pack("!BBH", FIN_TEXT, MASK_BIT | LENGTH_16, size)
        else:
            header = struct.pack("!BBQ", FIN_TEXT, MASK_BIT | LENGTH_64, size)
        frames += (header, key, payload)
        masks += (bytes(len(header) + MASK_SIZE), (key * (size // MASK_SIZE + 1))[:size])
    plain = b"".join(frames)
    size = len(plain)
    # One XOR over the whole batch as big integers: linear, in C, no per-byte Python loop.
    # Little-endian: CPython converts bytes and integers that way with fewer instructions
    # (about 320 fewer for a 172-byte request).
    masked = int.from_bytes(plain, "little") ^ int.from_bytes(b"".join(masks), "little")
    return masked.to_bytes(size, "little")


class IncomingFrames:
    """Splits what a server sends into decoded texts (``str``) and raw frames for wsproto
    (``bytes``), in stream order. Keeps an incomplete frame until the rest arrives."""

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self.delegating = False  # True: everything goes to wsproto from now on
        self._buffer = b""
        self._in_fragmented_message = False

    def receive(self, data: bytes) -> list[str | bytes]:
        """The texts and raw frames that ``data`` completes, in order."""
        if self.delegating:
            return [data]
        buffer = self._buffer + data if self._buffer else data
        out: list[str | bytes] = []
        position, end = 0, len(buffer)
        max_size = self.max_frame_size
        while end - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            if first == FIN_TEXT and not self._in_fragmented_message:
                # A whole unmasked text frame with its length in 1 or 3 bytes: nearly every
                # reply, decoded with the fewest steps. Anything else about it (a length in
                # too many bytes, over the limit) is left to the general path below.
                if second < LENGTH_16:
                    header, length = 2, second
                elif second == LENGTH_16 and end - position >= 4:
                    length = buffer[position + 2] << 8 | buffer[position + 3]
                    header = 4 if length >= LENGTH_16 else 0
                else:
                    header = length = 0
                if header and length <= max_size:
                    frame_end = position + header + length
                    if frame_end > end:
                        break
                    try:
                        out.append(buffer[position + header:frame_end].decode())
                    except UnicodeDecodeError:
                        out.append(buffer[position:frame_end])  # wsproto closes with 1007
                    position = frame_end
                    continue
            opcode = first & OPCODE_BITS
            length = second & 0x7F
            is_control = opcode >= 0x8
            if (second & MASK_BIT or first & RESERVED_BITS or opcode not in KNOWN_OPCODES
                    or (is_control and (not first & FIN_BIT or length > MAX_CONTROL_PAYLOAD))):
                return self._delegate(out, buffer[position:])
            header = 2
            if length == LENGTH_16:
                if end - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2:position + 4], "big")
                header = 4
                if length < LENGTH_16:
                    return self._delegate(out, buffer[position:])
            elif length == LENGTH_64:
                if end - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2:position + 10], "big")
                header = 10
                if length < 0x10000 or length >> 63:
                    return self._delegate(out, buffer[position:])
            if length > max_size:
                # wsproto streams such a frame in parts, and the reader's size limit trips.
                return self._delegate(out, buffer[position:])
            frame_end = position + header + length
            if frame_end > end:
                break
            if first == FIN_TEXT and not self._in_fragmented_message:
                try:
                    out.append(buffer[position + header:frame_end].decode())
                except UnicodeDecodeError:
                    out.append(buffer[position:frame_end])  # wsproto closes with 1007
            else:
                if not is_control:
                    self._in_fragmented_message = not first & FIN_BIT
                out.append(buffer[position:frame_end])
            position = frame_end
        self._buffer = buffer[position:]
        return out

    def _delegate(self, out: list[str | bytes], rest: bytes) -> list[str | bytes]:
        self.delegating = True
        self._buffer = b""
        out.append(rest)
        return out
