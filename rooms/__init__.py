"""The domain: Consultation, Participant, Role, permissions, RoomStore. No aiohttp, no aiortc."""
