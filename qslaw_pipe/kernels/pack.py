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
