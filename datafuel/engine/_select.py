"""``--engine NAME`` to an :class:`~datafuel.engine.Engine`."""

from __future__ import annotations

from datafuel.errors import ConfigError

from ._base import Engine
from ._local import LocalEngine
from ._ray import RayEngine, import_ray

__all__ = ["ENGINES", "get_engine"]

#: Engine names accepted by ``--engine``.
ENGINES = ("local", "ray")


def get_engine(name: str | Engine | None = "local", *, ray_address: str | None = None) -> Engine:
    """The engine called ``name`` (``"local"`` or ``"ray"``); an Engine is returned as is.

    ``ray_address`` is the cluster to join (``--ray-address``); giving it with the
    local engine is refused rather than ignored.
    """
    if isinstance(name, Engine):
        return name
    if name is None or name == "local":
        if ray_address is not None:
            raise ConfigError(
                f"--ray-address {ray_address!r} was given with the local engine; add --engine ray."
            )
        return LocalEngine()
    if name == "ray":
        import_ray()  # say how to install it now, before any work
        return RayEngine(ray_address)
    raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}. Got {name!r} instead.")
