"""A consultation's live side: each participant's socket, the room's rules, consent, revocation."""
