"""Pusher Channels protocol 7 hub for pushing archive events to devices."""
