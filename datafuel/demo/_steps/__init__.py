"""The demo's steps, one module each, with ``run(ctx: DemoContext) -> None``."""
