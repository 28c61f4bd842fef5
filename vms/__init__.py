"""VMS archive service: archive links, server-side archives, push and the media server."""
