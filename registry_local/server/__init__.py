"""The HTTP surface: the aiohttp application, its middleware, sending blob bodies,
and the handlers (handlers/)."""
