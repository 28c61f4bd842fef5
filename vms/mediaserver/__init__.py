"""Embedded media server speaking MediaMTX's playback API."""
