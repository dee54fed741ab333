"""The web page for readers: vidnotes.web.service (what it can do) and vidnotes.web.app (the HTTP API and the page)."""
