"""The zeromesh command line."""
