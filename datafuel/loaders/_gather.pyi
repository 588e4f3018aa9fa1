# Type stub for the C extension datafuel/loaders/_gather.c (see its header comment).
def rows_at(
    srcs: object, offsets: object, idx: object, row_bytes: int, out: object, /
) -> int | tuple[int] | None: ...
def windows_at(
    srcs: object,
    offsets: object,
    starts: object,
    length: int,
    out: object,
    token_size: int,
    fields: tuple[object, object, object, object, object] | None = None,
    /,
) -> int | tuple[int] | None: ...
def document_fields(
    boundaries: object,
    starts: object,
    seq_len: int,
    total: int,
    positions: object,
    mask: object,
    cu_seqlens: object,
    /,
) -> int: ...
