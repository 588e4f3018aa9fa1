# Type stub for the C extension datafuel/vision/_pack.c (see its header comment).
def pack_rgb(
    arrow_schema: object,
    arrow_array: object,
    out: bytearray | memoryview | object,
    width: int,
    height: int,
    flip: bool,
    /,
) -> None: ...
