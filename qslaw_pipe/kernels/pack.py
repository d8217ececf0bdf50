"""Two 4-bit codes per byte, low nibble first (the fold artifact's and every exporter's layout).

codes uint8 [out, in] with values < 16  ->  packed uint8 [out, ceil(in / 2)]:
    packed[o, j] = codes[o, 2j] | (codes[o, 2j + 1] << 4)
An odd `in` pads the last high nibble with 0. Works for bits <= 4 (2- and 3-bit codes use the same nibbles).
"""

import torch


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    if codes.dtype != torch.uint8 or codes.dim() != 2:
        raise ValueError("pack_int4 takes uint8 codes [out, in]")
    if codes.numel() and int(codes.max()) > 15:
        raise ValueError("pack_int4 needs codes < 16")
    if codes.shape[1] % 2:
        codes = torch.nn.functional.pad(codes, (0, 1))
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """uint8 [out, ceil(in / 2)] -> codes uint8 [out, in]."""
    out = torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1)
    return out[:, :in_features].contiguous()


def unpack_int4_reference(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """The obvious loop, for tests."""
    rows = []
    for row in packed.tolist():
        codes = []
        for byte in row:
            codes += [byte & 15, byte >> 4]
        rows.append(codes[:in_features])
    return torch.tensor(rows, dtype=torch.uint8)


def unpack_bits(words: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Dense little-endian bit streams, as GPTQ, AWQ, AutoRound and compressed-tensors pack int-k values into
    int32 words: row r's value i sits at bits [i * bits, (i + 1) * bits) of the concatenation of its words
    (word 0 lowest), so a value may straddle two words (3 bits: 32 values in 3 words).
    words int32 [rows, n_words] -> values int64 [rows, count], each in [0, 2^bits)."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    start = torch.arange(count) * bits
    word, shift = start // 32, start % 32
    low = w[:, word] >> shift
    spill = shift + bits > 32
    high = w[:, (word + 1).clamp(max=w.shape[1] - 1)] << (32 - shift)
    return torch.where(spill, low | high, low) & (2**bits - 1)
