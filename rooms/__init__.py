"""The domain: Consultation, Participant, Role, permissions and the RoomStore. No aiohttp, no aiortc."""
