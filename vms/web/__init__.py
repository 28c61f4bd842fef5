"""The browser pages: login, logout and the archive download history."""
