"""The aiohttp signaling server: WebSocket protocol, HTTP API, tokens, CLI and composition."""
