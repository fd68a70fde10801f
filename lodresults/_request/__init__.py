"""One request: the key and where it may go, HTTP statuses, the transport, retries and pacing."""
