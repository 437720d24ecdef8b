"""aiohttp edge: parse the request, call the core, append to the store, answer."""
