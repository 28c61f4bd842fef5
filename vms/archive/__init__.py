"""The archive service: links, server-side jobs, files and cleanup."""
