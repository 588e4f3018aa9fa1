# Type stub for the C extension datafuel/clean/_knnselect.c (see its header comment).
def update(num: object, cnt: object, heap_v: object, heap_i: object, offset: int, /) -> None: ...
def update_partial(
    ab: object,
    miss: object,
    sd: object,
    cd: object,
    qt: object,
    pt: object,
    heap_v: object,
    heap_i: object,
    offset: int,
    /,
) -> None: ...
def exact(R: object, F: object, cand: object, out: object, /) -> None: ...
def rank(
    X: object,
    blk: object,
    F: object,
    P: object,
    cand: object,
    special: object,
    todo: object,
    bounds: object,
    means: object,
    out: object,
    unsafe: object,
    retry: object,
    k: int,
    distance: bool,
    /,
) -> None: ...
