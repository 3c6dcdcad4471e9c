"""The aiortc media Worker: Producers and Consumers forwarding encoded frames, never transcoding."""
