# Type stub for the C extension datafuel/vision/_jpegregion.c (see its header comment).
LIBJPEG_VERSION: int

def decode_region(
    data: bytes | bytearray | memoryview, x: int, y: int, w: int, h: int, scale_denom: int, /
) -> tuple[bytes, int, int, int, int] | None: ...
