"""Building blocks of the bad-input corpus (tests/test_robustness.py, scripts/robustness_figures.py):
huge images written without holding their pixels in memory, a landmarker bundle with swapped
members, and a snapshot of a folder tree to prove that no user file changed."""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path


def _segment(marker: int, payload: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def flat_jpeg(width: int, height: int, *, scan: bool = True) -> bytes:
    """A valid baseline greyscale JPEG of ``width`` x ``height`` pixels, all mid-grey, built
    without holding the pixels in memory: every 8x8 block is coded as 'DC difference 0, end of
    block', one bit each with a one-code Huffman table (20000x20000 pixels: 1.6 MB). With
    ``scan=False`` only the headers are written (a file that claims the size and holds no data)."""
    out = bytearray(b"\xff\xd8")
    out += _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    out += _segment(0xDB, b"\x00" + bytes([1] * 64))
    out += _segment(0xC0, b"\x08" + struct.pack(">HH", height, width) + b"\x01" + b"\x01\x11\x00")
    out += _segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")  # DC: code '0' = category 0
    out += _segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")  # AC: code '0' = end of block
    if not scan:
        return bytes(out)
    out += _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    nbytes, rest = divmod(blocks * 2, 8)
    out += bytes(nbytes)
    if rest:
        out += bytes([0xFF >> rest])  # pad the last byte with 1 bits
    out += b"\xff\xd9"
    return bytes(out)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with a tiny image data chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def rearranged_bundle(source: Path, dest: Path, mapping: dict[str, str]) -> Path:
    """A copy of the landmarker bundle whose members are replaced as ``mapping`` says
    (member name -> name of the member whose bytes it gets)."""
    with zipfile.ZipFile(source) as src:
        data = {i.filename: src.read(i.filename) for i in src.infolist()}
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as z:
        for name in data:
            z.writestr(name, data[mapping.get(name, name)])
    return dest


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (without following links): its kind, and for regular files the
    size, modification time and SHA-1, for links the target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out
