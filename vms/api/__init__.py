"""The JSON API under /api: thin handlers that validate, call a service and serialize."""
